"""``ffbench --vs-torch``: PyTorch eager on the same checkpoint, in a child process.

ffeval is torch-free and may not import fftrain (tests/test_layering.py), so the eager
model runs in ``python -m fftrain.eager CKPT`` (fftrain owns it; the line protocol is
ffcore.timedchild's). ffbench interleaves one ``run`` request per round with its own calls;
the child times each call itself, so the pipe's round trip is not in the figure. The child's
memory is its own: ffbench's peak RSS no longer includes the PyTorch model.
"""

from __future__ import annotations

from pathlib import Path

from ffcore.timedchild import TimedChild

from .errors import BenchError


class EagerError(BenchError):
    """The PyTorch comparison cannot run; one line saying why."""


def _hint(why: str) -> str:
    return " (the train extra, with torch, must be installed)" if "ModuleNotFoundError" in why else ""


class EagerChild(TimedChild):
    """The eager model of ``ckpt`` in a child process; ``info`` and ``image_size`` from it."""

    def __init__(self, ckpt: str | Path, threads: int | None = None) -> None:
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise EagerError(f"--vs-torch {ckpt}: no such checkpoint")
        args = ["-m", "fftrain.eager", str(ckpt)] + (["--threads", str(int(threads))] if threads else [])
        super().__init__(args, f"--vs-torch {ckpt}: the PyTorch process (python -m fftrain.eager)", _hint, EagerError)
        self.image_size = tuple(self.hello["image_size"])
        self.info = self.hello["info"]
