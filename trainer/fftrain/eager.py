"""PyTorch eager inference of a checkpoint, timed call by call, for comparisons with the
exported graph (``ffbench --vs-torch``).

ffbench is torch-free (ffeval may not import fftrain), so it reaches this runner as a
command, in a child process it talks to over pipes:

    python -m fftrain.eager CKPT [--threads N]

The child loads the checkpoint and speaks ffcore.timedchild's line protocol: a hello
``{"ok": true, "image_size": [h, w], "info": {...}}`` (or ``{"ok": false, "error": "..."}``),
then ``load PATH`` / ``run`` / ``quit`` requests.

``run`` times ``model(to_tensor_batch(batch))`` under ``torch.inference_mode`` with
``time.perf_counter`` in the child, so the pipe's latency is not in the figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def load(ckpt: str | Path, threads: int | None = None):
    """(model in eval mode, info dict) of a checkpoint; torch threads set when given."""
    import torch

    from . import checkpoint

    model, _ = checkpoint.load(Path(ckpt))
    model.eval()
    if threads:
        torch.set_num_threads(int(threads))
    info = {"version": torch.__version__, "threads": torch.get_num_threads(), "mode": "eager, inference_mode, float32"}
    return model, info


def timed_call(model, batch: np.ndarray) -> float:
    """Milliseconds of one eager call on a uint8 NHWC batch (conversion to float included)."""
    import torch

    from .data import to_tensor_batch

    t0 = time.perf_counter()
    with torch.inference_mode():
        model(to_tensor_batch(batch))
    return (time.perf_counter() - t0) * 1e3


def serve(ckpt: str, threads: int | None, stdin=sys.stdin, stdout=sys.stdout) -> int:
    from ffcore.timedchild import refuse
    from ffcore.timedchild import serve as serve_requests

    try:
        model, info = load(ckpt, threads)
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        return refuse(f"cannot load the checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                      stdout)
    hello = {"image_size": list(model.config.image_size), "info": info}
    return serve_requests(hello, lambda batch: timed_call(model, batch), stdin, stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fftrain.eager", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    return serve(args.ckpt, args.threads)


if __name__ == "__main__":
    raise SystemExit(main())
