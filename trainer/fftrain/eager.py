"""PyTorch eager inference of a checkpoint, timed call by call, for comparisons with the
exported graph (``ffbench --vs-torch``).

ffbench is torch-free (ffeval may not import fftrain), so it reaches this runner as a
command, in a child process it talks to over pipes:

    python -m fftrain.eager CKPT [--threads N]

The child loads the checkpoint and writes one JSON line: ``{"ok": true, "image_size": [h, w],
"info": {...}}`` or ``{"ok": false, "error": "..."}``. Then, one request per line on stdin:

    load PATH   read a uint8 NHWC batch from the .npy file PATH      -> {"ok": true}
    run         one timed call on the loaded batch                    -> {"ok": true, "ms": 12.3}
    quit        (or end of input)

``run`` times ``model(to_tensor_batch(batch))`` under ``torch.inference_mode`` with
``time.perf_counter`` in the child, so the pipe's latency is not in the figure.
"""

from __future__ import annotations

import argparse
import json
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
    def say(obj: dict) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    try:
        model, info = load(ckpt, threads)
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        say({"ok": False, "error": f"cannot load the checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"})
        return 1
    say({"ok": True, "image_size": list(model.config.image_size), "info": info})
    batch = None
    for line in stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "load":
                batch = np.load(arg)
                say({"ok": True})
            elif cmd == "run":
                if batch is None:
                    raise ValueError("run before load")
                say({"ok": True, "ms": timed_call(model, batch)})
            elif cmd == "quit":
                break
            else:
                raise ValueError(f"unknown request {cmd!r}")
        except Exception as e:  # noqa: BLE001
            say({"ok": False, "error": f"{type(e).__name__}: {e}"})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fftrain.eager", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    return serve(args.ckpt, args.threads)


if __name__ == "__main__":
    raise SystemExit(main())
