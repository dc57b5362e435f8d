"""What ``ffrt detect`` reads and writes: the list of image files, and its JSON report.

Two things a line engineer must be able to rely on:

- Every entry of a folder that is not checked is named, with the reason (not an image
  suffix, a sub-folder without --recursive, a FIFO or device, a broken link): "why are
  there 98 results for 100 files?" has an answer in the output.
- The report exists whatever happens to the run: output paths are checked before any
  image is read; the report is written when the run starts, rewritten (atomically, at most
  every ``REWRITE_EVERY_S`` seconds) while it goes, and once more when it ends, interrupted
  (Ctrl-C) or not. Its ``status`` says which: "running", "complete", "interrupted",
  "failed". A run killed outright leaves the last rewrite, never a half-written file.
"""

from __future__ import annotations

import json
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from ffcore.files import IMAGE_SUFFIXES, atomic_write_bytes

#: The report is rewritten at most this often while a run goes: rewriting it after every
#: image would cost time quadratic in the number of images.
REWRITE_EVERY_S = 1.0


@dataclass
class ImageList:
    paths: list[Path] = field(default_factory=list)
    #: (path, reason) of each folder entry that is not checked.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Arguments that give nothing to check (missing path, folder without images): errors.
    problems: list[str] = field(default_factory=list)


def collect_images(paths: list[str], recursive: bool) -> ImageList:
    """Expand folders into their image files (name order); name everything left out.

    An explicitly named file is tried whatever its suffix or kind (the Detector refuses a
    FIFO or device with its own message); inside folders only regular files with an image
    suffix are taken.
    """
    out = ImageList()
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = _scan(p, recursive, out.skipped)
            if not found:
                out.problems.append(
                    f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder"
                    + ("" if recursive else " (use --recursive for sub-folders)")
                )
            out.paths.extend(found)
        elif p.exists() or p.is_symlink():
            out.paths.append(p)
        else:
            out.problems.append(f"{p}: no such file or folder")
    return out


def _scan(folder: Path, recursive: bool, skipped: list[tuple[str, str]]) -> list[Path]:
    found: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        skipped.append((str(folder), f"cannot be listed ({e.strerror or e})"))
        return found
    for entry in entries:
        try:
            mode = entry.stat().st_mode  # follows links: a link to an image file is an image file
        except OSError:
            skipped.append((str(entry), "a broken link or an unreadable entry"))
            continue
        if stat.S_ISDIR(mode):
            if recursive:
                found.extend(_scan(entry, recursive, skipped))
            else:
                skipped.append((str(entry), "a sub-folder (use --recursive to check the images inside it)"))
        elif not stat.S_ISREG(mode):
            skipped.append((str(entry), "not a regular file (a FIFO, socket or device)"))
        elif entry.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(entry), f"not an image file name ({', '.join(IMAGE_SUFFIXES)})"))
        else:
            found.append(entry)
    return found


def check_output_file(path: Path, what: str) -> None:
    """Make sure ``path`` can be written, before any work: its folder is created if
    missing and a temporary file is created (and removed) in it. Raises OSError with the
    option's name in the message."""
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path}: is a folder; give a file name, e.g. {path / 'report.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise type(e)(f"{what} {path}: cannot be written ({e.strerror or e}); choose a writable location") from None


def check_output_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise type(e)(f"{what} {path}: cannot be written to ({e.strerror or e}); choose a writable folder") from None


class RunReport:
    """The results of one ``ffrt detect`` run; with a ``path`` (``--json``), also that
    file, rewritten atomically as it grows. One list holds the results for the summary and
    the file alike, so an interrupt between two steps cannot make them disagree."""

    def __init__(self, path: Path | None, header: dict, skipped: list[tuple[str, str]], problems: list[str]) -> None:
        self.path = path
        self.header = header
        self.skipped = [{"path": p, "reason": r} for p, r in skipped]
        self.problems = list(problems)
        self.images: list[dict] = []
        self._last_write = float("-inf")

    def add(self, record: dict, stats: Callable[[], dict]) -> None:
        """Append one image's record; ``stats`` is called only when the file is rewritten."""
        self.images.append(record)
        if self.path is not None and time.monotonic() - self._last_write >= REWRITE_EVERY_S:
            self.write("running", stats())

    def write(self, status: str, stats: dict) -> None:
        if self.path is None:
            return
        report = {
            **self.header,
            "ffrt_version": __version__,
            "status": status,
            "images": self.images,
            "skipped": self.skipped,
            "input_errors": self.problems,
            "stats": stats,
        }
        atomic_write_bytes(self.path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
        self._last_write = time.monotonic()

