"""CFLOW-AD's (or FastFlow's) exported file on real images: PyTorch vs ONNX Runtime parity, and
batch independence (each image scored alone, then inside a batch of 8 with 7 other images).

    python benchmarks/cflow_batch_parity.py --run runs/cflow_vs_fastflow/elpv-mono/cflow --data elpv:mono [--images 16]

``--run`` is a folder holding model.pt and model.onnx (benchmarks/cflow_vs_fastflow.py writes
them). Images: the first ``--images`` of the TEST split (normal and defective; nothing is
chosen on them). Prints max |difference| of maps and scores, absolute and relative to the
largest value; the tests assert the same within 1e-5 (tests/export/test_cflow_export.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "cflow-batch-parity.json")
    args = ap.parse_args(argv)

    import torch

    from ffcore.data import load_batch, resolve
    from ffeval.machine import write_rows
    from ffrt.backends import create_backend
    from ffrt.metafile import read_onnx_meta
    from fftrain import checkpoint
    from fftrain.data import to_tensor_batch

    rows = []
    for run, data in zip(args.run, args.data):
        model, _ = checkpoint.load(run / "model.pt")
        model.eval()
        meta = read_onnx_meta(run / "model.onnx")
        images = load_batch(resolve(data).test[: args.images], model.config.image_size, model.config.resize_mode)
        be, _ = create_backend("onnxruntime-cpu", run / "model.onnx", meta, None, precision="fp32")
        maps, scores = be.run(images)
        with torch.no_grad():
            tm, ts = model(to_tensor_batch(images))
        tm, ts = tm.numpy(), ts.numpy()
        # Alone vs in a batch of 8: image i alone, and at position i % 8 of a batch with 7 others.
        alone_m, alone_s, batch_m, batch_s = [], [], [], []
        for i in range(len(images)):
            m1, s1 = be.run(images[i : i + 1])
            others = [j for j in range(len(images)) if j != i][:7]
            batch = np.stack([images[j] for j in others[: i % 8]] + [images[i]] + [images[j] for j in others[i % 8 :]])
            m8, s8 = be.run(batch)
            alone_m.append(m1[0]), alone_s.append(s1[0]), batch_m.append(m8[i % 8]), batch_s.append(s8[i % 8])
        alone_m, batch_m, alone_s, batch_s = map(np.asarray, (alone_m, batch_m, alone_s, batch_s))
        row = {
            "run": str(run), "data": data, "split": "test", "images": len(images), "kind": meta.model.kind,
            "parity_torch_vs_ort": {
                "map_max_abs": float(np.abs(maps - tm).max()), "map_max_rel": float(np.abs(maps - tm).max() / np.abs(tm).max()),
                "score_max_abs": float(np.abs(scores - ts).max())},
            "alone_vs_batch8_ort": {
                "map_max_abs": float(np.abs(alone_m - batch_m).max()),
                "map_max_rel": float(np.abs(alone_m - batch_m).max() / np.abs(alone_m).max()),
                "score_max_abs": float(np.abs(alone_s - batch_s).max())},
            "score_range": [float(scores.min()), float(scores.max())],
        }
        be.close()
        rows.append(row)
        print(json.dumps(row))
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
