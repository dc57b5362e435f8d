"""``ffbench --vs-torch``: PyTorch eager on the same checkpoint, in a child process.

ffeval is torch-free and may not import fftrain (tests/test_layering.py), so the eager
model runs in ``python -m fftrain.eager CKPT`` (fftrain owns it; the line protocol is
ffcore.timedchild's). ffbench interleaves one ``run`` request per round with its own calls;
the child times each call itself, so the pipe's round trip is not in the figure. The child's
memory is its own: ffbench's peak RSS no longer includes the PyTorch model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ffcore.timedchild import ChildError, TimedChild

from .errors import BenchError


class EagerError(BenchError):
    """The PyTorch comparison cannot run; one line saying why."""


def _hint(why: str) -> str:
    return " (the train extra, with torch, must be installed)" if "ModuleNotFoundError" in why else ""


class EagerChild:
    """The eager model of ``ckpt`` in a child process; ``info`` and ``image_size`` from it."""

    def __init__(self, ckpt: str | Path, threads: int | None = None) -> None:
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise EagerError(f"--vs-torch {ckpt}: no such checkpoint")
        args = ["-m", "fftrain.eager", str(ckpt)] + (["--threads", str(int(threads))] if threads else [])
        try:
            self._child = TimedChild(args, f"--vs-torch {ckpt}: the PyTorch process (python -m fftrain.eager)", _hint)
        except ChildError as e:
            raise EagerError(str(e)) from None
        self.image_size = tuple(self._child.hello["image_size"])
        self.info = self._child.hello["info"]

    def load(self, batch: np.ndarray) -> None:
        try:
            self._child.load(batch)
        except ChildError as e:
            raise EagerError(str(e)) from None

    def run(self) -> float:
        """Milliseconds of one eager call on the loaded batch, as the child timed it."""
        try:
            return self._child.run()
        except ChildError as e:
            raise EagerError(str(e)) from None

    def close(self) -> None:
        self._child.close()
