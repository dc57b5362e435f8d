"""A checkpoint whose memory bank is at fftrain's cap (fftrain.memory_bank.MAX_VECTORS), for timing only.

    python benchmarks/ablation/bank_at_cap.py IN.pt OUT.pt

IN.pt must have a bank (e.g. the suite's elpv-mono/bank-steps4-epochs24). OUT.pt is the same model
with its bank replaced by MAX_VECTORS patches of its training images drawn at random, so the
graph costs what the largest bank costs; the thresholds are IN's, so its decisions mean nothing.
Export it (`ffexport --no-bf16`) and time it beside IN's file with latency_ab.py.
"""

from __future__ import annotations

import sys

import torch

from fftrain import checkpoint
from fftrain.data import resolve
from fftrain.memory_bank import MAX_VECTORS, patches
from fftrain.train import extract_features


def main(argv: list[str]) -> int:
    from ffcore.data import load_batch

    model, payload = checkpoint.load(argv[0])
    if model.bank is None:
        raise SystemExit(f"{argv[0]} has no memory bank")
    split = resolve(payload["train_info"]["data"], 10)
    images = load_batch(split.train, model.config.image_size, model.config.resize_mode)
    with torch.no_grad():
        rows = patches(extract_features(model.eval(), images, progress=False)[model.bank.scale_index])
    rows = rows.reshape(-1, rows.shape[-1])
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:MAX_VECTORS]
    model.bank.set_vectors(rows[pick].contiguous())
    model.config = model.config.model_copy(update={"memory_bank_vectors": MAX_VECTORS})
    checkpoint.save(argv[1], model, payload["calibration"], payload["train_info"])
    print(f"wrote {argv[1]}: a bank of {MAX_VECTORS} vectors (was {payload['config']['memory_bank_vectors']})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
