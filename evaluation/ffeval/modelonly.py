"""Model-only timing of one ffrt backend in a process of its own.

    python -m ffeval.modelonly MODEL BATCH.npy --batches 1,8 --rounds 30 [--warmup 2]
                               [--backend onnxruntime-cpu] [--threads N] [--precision fp32]

times ``backend.run`` (ffbench's "inference" stage) on the first n images of the uint8 NHWC
batch in BATCH.npy for each batch size n, with nothing else in the process, and prints one
JSON line: ``{"ok": true, "backend": ..., "results": {"1": Stats, "8": Stats}}`` (Stats as
ffeval.bench.summarize), or ``{"ok": false, "error": ...}``.

Why a process of its own: ONNX Runtime's and OpenMP's worker threads keep spinning after a
call, and a process that also runs PyTorch (the demo, the peers benchmark) times each runtime
against the other's threads. :func:`time_in_child` runs this module as a child and returns
its figures; ``ffcore.timing.isolation_check`` compares them with an interleaved run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import BenchError


def time_model_only(model: str | Path, images: np.ndarray, batches: tuple[int, ...], rounds: int, warmup: int = 2,
                    backend: str = "onnxruntime-cpu", threads: int | None = None,
                    precision: str = "auto") -> dict:
    """In this process: {"backend": description, "results": {str(batch): Stats}}."""
    from ffcore.timing import interleaved
    from ffrt.backends import create_backend
    from ffrt.meta import read_onnx_meta

    from .bench import summarize

    path = Path(model)
    be, _ = create_backend(backend, path, read_onnx_meta(path), threads, precision=precision)
    try:
        results = {}
        for n in batches:
            x = np.ascontiguousarray(images[:n])
            if len(x) != n:
                raise BenchError(f"batch {n}: only {len(images)} images given")
            ms = interleaved({"model": lambda: be.run(x)}, rounds=rounds, warmup=warmup)["model"]
            results[str(n)] = summarize(ms, n)
        return {"backend": be.description, "precision": be.precision, "results": results}
    finally:
        be.close()


def time_in_child(model: str | Path, images: np.ndarray, batches: tuple[int, ...], rounds: int, warmup: int = 2,
                  backend: str = "onnxruntime-cpu", threads: int | None = None, precision: str = "auto",
                  timeout_s: float = 1800.0) -> dict:
    """:func:`time_model_only` in a child process (``python -m ffeval.modelonly``); the
    calling process waits, idle, until it is done."""
    with tempfile.TemporaryDirectory(prefix="ffeval-modelonly-") as tmp:
        batch_file = Path(tmp) / "batch.npy"
        np.save(batch_file, np.ascontiguousarray(images, dtype=np.uint8))
        cmd = [sys.executable, "-m", "ffeval.modelonly", str(model), str(batch_file),
               "--batches", ",".join(map(str, batches)), "--rounds", str(rounds), "--warmup", str(warmup),
               "--backend", backend, "--precision", precision] + (["--threads", str(threads)] if threads else [])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    reply = json.loads(lines[-1]) if lines else None
    if not reply or not reply.get("ok"):
        why = reply["error"] if reply else (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise BenchError(f"model-only timing of {model} in its own process failed: {why}")
    return reply


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ffeval.modelonly", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("batch_file", help="uint8 NHWC images at the model size (.npy)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--backend", default="onnxruntime-cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args(argv)
    try:
        from .bench import parse_batches

        images = np.load(args.batch_file)
        out = time_model_only(args.model, images, parse_batches(args.batches), args.rounds, args.warmup,
                              args.backend, args.threads, args.precision)
        print(json.dumps({"ok": True, **out}), flush=True)
        return 0
    except Exception as e:  # noqa: BLE001 - one line for the parent
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}),
              flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
