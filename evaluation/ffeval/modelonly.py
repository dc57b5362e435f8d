"""One ffrt backend timed model-only in a process of its own.

    python -m ffeval.modelonly MODEL [--backend onnxruntime-cpu] [--threads N] [--precision auto]

serves ffcore.timedchild's line protocol: its hello ``{"ok": true, "backend": description,
"precision": ...}``, then ``load PATH`` (a uint8 NHWC batch at the model size, .npy) and
``run``, which times one ``backend.run`` (ffbench's "inference" stage) in the child.

Why a process of its own: ONNX Runtime's and OpenMP's worker threads keep spinning after a
call, and a process that also runs PyTorch (the demo, the peers benchmark) times each runtime
against the other's threads. :class:`ModelOnlyChild` is the parent's end; :func:`time_in_child`
times a few batch sizes in one such child; ``ffcore.timing.isolation_check`` compares a figure
from here with the same runtime interleaved with another in one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from ffcore.timedchild import TimedChild

from .errors import BenchError


class ModelOnlyChild(TimedChild):
    """``MODEL`` on an ffrt backend in a child process (``load(batch)``, ``run() -> ms``,
    ``last_cpu_ms``, ``close()``); ``backend`` and ``precision`` say what runs it."""

    def __init__(self, model: str | Path, backend: str = "onnxruntime-cpu", threads: int | None = None,
                 precision: str = "auto") -> None:
        args = ["-m", "ffeval.modelonly", str(model), "--backend", backend, "--precision", precision]
        args += ["--threads", str(int(threads))] if threads else []
        super().__init__(args, f"model-only timing of {model} in its own process", error=BenchError)
        self.backend, self.precision = self.hello["backend"], self.hello["precision"]


def time_in_child(model: str | Path, images: np.ndarray, batches: tuple[int, ...], rounds: int, warmup: int = 2,
                  backend: str = "onnxruntime-cpu", threads: int | None = None, precision: str = "auto") -> dict:
    """The model alone in a child process, per batch size n on the first n ``images``:
    {"backend", "precision", "results": {str(n): Stats (ffeval.bench.summarize)}}."""
    from .bench import summarize

    child = ModelOnlyChild(model, backend, threads, precision)
    try:
        results = {}
        for n in batches:
            if len(images) < n:
                raise BenchError(f"batch {n}: only {len(images)} images given")
            child.load(images[:n])
            for _ in range(warmup):
                child.run()
            results[str(n)] = summarize([child.run() for _ in range(rounds)], n)
        return {"backend": child.backend, "precision": child.precision, "results": results}
    finally:
        child.close()


def main(argv: list[str] | None = None) -> int:
    from ffcore.timedchild import refuse, serve

    ap = argparse.ArgumentParser(prog="python -m ffeval.modelonly", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--backend", default="onnxruntime-cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args(argv)
    try:
        from ffrt.backends import create_backend
        from ffrt.metafile import read_onnx_meta

        path = Path(args.model)
        be, _ = create_backend(args.backend, path, read_onnx_meta(path), args.threads, precision=args.precision)
    except Exception as e:  # noqa: BLE001 - one line for the parent
        return refuse(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def timed_call(batch: np.ndarray) -> float:
        t0 = time.perf_counter()
        be.run(batch)
        return (time.perf_counter() - t0) * 1e3

    try:
        return serve({"backend": be.description, "precision": be.precision}, timed_call, sys.stdin, sys.stdout)
    finally:
        be.close()


if __name__ == "__main__":
    raise SystemExit(main())
