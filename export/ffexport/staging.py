"""Stage an export inside its destination folder; publish only files that passed every check.

A failed export must never cost a line its good model. So nothing is written under a
usable name until every check of the run has passed (FP32 parity, the FP16 gate, the
INT8 gate): the files are written into a hidden stage folder ``OUT/.ffexport.<pid>.<random>.tmp/``
(same filesystem, so publishing is an atomic rename per file), checked there, and renamed
into ``OUT`` at the very end. Any failure, exception or Ctrl-C removes the stage; a
``kill -9`` leaves it behind under a name no tool loads, and the next export into that
folder removes stages whose process is gone (:func:`prune_stale`).

Files are published with ``model.onnx`` last, so a new ``model.onnx`` implies its FP16 /
INT8 siblings of the same run are in place too. Folders (the Triton repository's model
folders) are published first, each by two renames (the old folder into the stage, the new
one out of it).

Publishing is a series of renames, and a ``kill -9`` can fall between two of them. So
before the first rename the stage records what it is about to publish (:data:`PLAN`,
fsync'd); the next export into that folder finds the killed stage and finishes its
publication (:func:`prune_stale`) before anything else, instead of deleting the rest of
it: the folder ends with every file of that run, never some old and some new. A stage
without a plan was killed before its checks passed and is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ffcore.files import is_stale

PREFIX = ".ffexport."
SUFFIX = ".tmp"
#: Inside a stage: what it publishes, written (and fsync'd) just before the first rename.
PLAN = "publish.json"
#: Inside a stage: where a folder being replaced is moved before the new one takes its name.
OLD = "old."


def _is_stale(stage: Path) -> bool:
    pid = stage.name[len(PREFIX):].split(".", 1)[0]
    return is_stale(stage, int(pid) if pid.isdigit() else None)


def prune_stale(folder: str | os.PathLike) -> int:
    """Finish the publication of stages left in ``folder`` by exports killed while renaming,
    then remove every stage whose process is gone; returns how many were removed."""
    removed = 0
    for stage in sorted(Path(folder).glob(f"{PREFIX}*{SUFFIX}")):
        if stage.is_dir() and _is_stale(stage):
            if (stage / PLAN).is_file():
                _publish(stage, Path(folder), json.loads((stage / PLAN).read_text()))
            shutil.rmtree(stage, ignore_errors=True)
            removed += 1
    return removed


def _publish(stage: Path, out: Path, plan: dict) -> None:
    """Carry out ``plan``, or what is left of it: each step is skipped when already done, so
    a publication cut at any point is finished by running this again."""
    for name in plan["dirs"]:
        new = stage / name
        if not new.is_dir():
            continue  # already published
        if (out / name).exists() and not (stage / (OLD + name)).exists():
            os.replace(out / name, stage / (OLD + name))
        os.replace(new, out / name)
    for name in plan["files"]:
        if (stage / name).is_file():
            os.replace(stage / name, out / name)
    _fsync_dir(out)


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

    def publish(self, names: list[str], dirs: tuple[str, ...] = ()) -> list[Path]:
        """Move the staged files, then ``dirs`` (sub-paths of OUT such as "triton/ffrt_model",
        staged under the same relative path), into OUT, folders first and ``model.onnx`` last;
        returns the final paths of the files."""
        ordered = sorted(names, key=lambda n: n == "model.onnx")
        missing = [n for n in ordered if not (self.dir / n).is_file()] + [d for d in dirs if not (self.dir / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"not staged: {', '.join(missing)}")
        for d in dirs:
            (self.out / d).parent.mkdir(parents=True, exist_ok=True)
            (self.dir / (OLD + d)).parent.mkdir(parents=True, exist_ok=True)
        plan = self.dir / PLAN
        with open(plan, "w") as f:
            json.dump({"dirs": list(dirs), "files": ordered}, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.dir)
        _publish(self.dir, self.out, {"dirs": list(dirs), "files": ordered})
        return [self.out / name for name in ordered]
