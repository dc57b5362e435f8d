"""``ffbench --vs-torch``: PyTorch eager on the same checkpoint, in a child process.

ffeval is torch-free and may not import fftrain (tests/test_layering.py), so the eager
model runs in ``python -m fftrain.eager CKPT`` (fftrain owns it; see that module for the
line protocol). ffbench interleaves one ``run`` request per round with its own calls; the
child times each call itself, so the pipe's round trip is not in the figure. The child's
memory is its own: ffbench's peak RSS no longer includes the PyTorch model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import BenchError


class EagerError(BenchError):
    """The PyTorch comparison cannot run; one line saying why."""


class EagerChild:
    """The eager model of ``ckpt`` in a child process; ``info`` and ``image_size`` from it."""

    def __init__(self, ckpt: str | Path, threads: int | None = None) -> None:
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise EagerError(f"--vs-torch {ckpt}: no such checkpoint")
        self._tmp = tempfile.TemporaryDirectory(prefix="ffbench-eager-")
        self._stderr = open(Path(self._tmp.name) / "stderr.txt", "w+b")  # a file: a chatty child never blocks
        cmd = [sys.executable, "-m", "fftrain.eager", str(ckpt)] + (["--threads", str(int(threads))] if threads else [])
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      text=True, env=os.environ.copy())
        try:
            hello = self._reply(f"--vs-torch {ckpt}")
        except EagerError:
            self.close()
            raise
        self.image_size = tuple(hello["image_size"])
        self.info = hello["info"]

    def _reply(self, what: str) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=30)
            self._stderr.seek(0)
            tail = [ln for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
            why = tail[-1].strip() if tail else f"exit code {self._proc.returncode}"
            hint = " (the train extra, with torch, must be installed)" if "ModuleNotFoundError" in why else ""
            raise EagerError(f"{what}: the PyTorch process (python -m fftrain.eager) ended: {why}{hint}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise EagerError(f"{what}: {reply.get('error', 'failed')}")
        return reply

    def _ask(self, request: str, what: str) -> dict:
        self._proc.stdin.write(request + "\n")
        self._proc.stdin.flush()
        return self._reply(what)

    def load(self, batch: np.ndarray) -> None:
        path = Path(self._tmp.name) / "batch.npy"
        np.save(path, np.ascontiguousarray(batch))
        self._ask(f"load {path}", "--vs-torch")

    def run(self) -> float:
        """Milliseconds of one eager call on the loaded batch, as the child timed it."""
        return float(self._ask("run", "--vs-torch")["ms"])

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                proc.stdin.write("quit\n")
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                proc.kill()
                proc.wait()
        self._stderr.close()
        self._tmp.cleanup()
