"""Stage an export inside its destination folder; publish only files that passed every check.

A failed export must never cost a line its good model. So nothing is written under a
usable name until every check of the run has passed (FP32 parity, the FP16 gate, the
INT8 gate): the files are written into a hidden stage folder ``OUT/.ffexport.<pid>.<random>.tmp/``
(same filesystem, so publishing is an atomic rename per file), checked there, and renamed
into ``OUT`` at the very end. Any failure, exception or Ctrl-C removes the stage; a
``kill -9`` leaves it behind under a name no tool loads, and the next export into that
folder removes stages whose process is gone (:func:`prune_stale`).

Files are published with ``model.onnx`` last, so a new ``model.onnx`` implies its FP16 /
INT8 siblings of the same run are in place too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = ".ffexport."
SUFFIX = ".tmp"
#: Where a process id cannot be probed safely (Windows: os.kill would terminate it), a stage
#: is stale when it has not changed for this long.
STALE_AGE_S = 24 * 3600


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(stage: Path) -> bool:
    if os.name == "posix":
        try:
            return not _pid_alive(int(stage.name[len(PREFIX):].split(".", 1)[0]))
        except ValueError:
            pass
    try:
        return time.time() - stage.stat().st_mtime > STALE_AGE_S
    except OSError:
        return False


def prune_stale(folder: str | os.PathLike) -> int:
    """Remove stages left in ``folder`` by exports that were killed; returns how many."""
    removed = 0
    for stage in Path(folder).glob(f"{PREFIX}*{SUFFIX}"):
        if stage.is_dir() and _is_stale(stage):
            shutil.rmtree(stage, ignore_errors=True)
            removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Stage:
    """``with Stage(out) as stage:`` write to ``stage.path(name)``, then ``stage.publish(names)``.

    Leaving the block removes the stage folder and whatever was not published.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)

    def __enter__(self) -> "Stage":
        self.out.mkdir(parents=True, exist_ok=True)
        prune_stale(self.out)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}.", suffix=SUFFIX, dir=self.out))
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def publish(self, names: list[str]) -> list[Path]:
        """Rename the staged files into OUT (``model.onnx`` last); returns their final paths."""
        ordered = sorted(names, key=lambda n: n == "model.onnx")
        missing = [n for n in ordered if not (self.dir / n).is_file()]
        if missing:
            raise FileNotFoundError(f"not staged: {', '.join(missing)}")
        done = []
        for name in ordered:
            os.replace(self.dir / name, self.out / name)
            done.append(self.out / name)
        _fsync_dir(self.out)
        return done
