"""Model-only latency of in-memory models, and issue 21's speed budget: the default then and now.

    python benchmarks/ablation/graph_latency.py --now runs/demo/model.pt [--rounds 30] [--json OUT]

``time_models`` traces each AnomalyModel with ffexport's own tracer (the fused graph a user's
``model.onnx`` holds, without its metadata), counts its multiply-accumulates (ffeval.macs) and
times the graphs on ONNX Runtime CPU, 2 threads, in interleaved rounds (ffcore.timing) at
batch 1 and 8. Every turn starts with an untimed call: the first call after another session ran
pays for that session's spinning threads.

The script's own measurement (issue 21's budget: "the default stays within 1.5x of today's
default CPU latency at batch 1"): ``--now`` is a checkpoint trained with today's fftrain
defaults (``make demo``'s); "then" is the default when issue 21 was filed, at the same input
size: 8 coupling steps, no memory bank, the image score from every stride (trained weights do
not change the arithmetic, so its flows are left as initialised).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

BATCHES = (1, 8)


def time_models(models: dict, rounds: int) -> dict:
    """{"gmac_per_image": {name: G}, "batches": {batch: {name: {"median_ms", "ratio"}}}}; ratios
    to the first model. Every model must take the same input size."""
    import onnxruntime as ort
    from ffcore.timing import interleaved
    from ffeval.macs import count_macs
    from ffexport.exporter import trace_to_onnx
    from ffexport.request import ExportRequest

    sizes = {tuple(m.config.image_size) for m in models.values()}
    if len(sizes) != 1:
        raise SystemExit(f"the models' input sizes differ: {sorted(sizes)}")
    (h, w), = sizes
    sessions, macs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model) in enumerate(models.items()):
            path = Path(tmp) / f"{i}.onnx"
            path.write_bytes(trace_to_onnx(model.eval(), max(BATCHES), ExportRequest.model_fields["opset"].default).SerializeToString())
            macs[name] = round(count_macs(str(path)).total / 1e9, 3)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    out = {"image_size": [h, w], "rounds": rounds, "threads": 2, "onnxruntime": ort.__version__,
           "gmac_per_image": macs, "batches": {}}
    for batch in BATCHES:
        x = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        runners = {k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()}
        med = {k: float(np.median(v)) for k, v in interleaved(runners, rounds=rounds, warmup=3, rewarm=1).items()}
        base = next(iter(med.values()))
        out["batches"][batch] = {k: {"median_ms": round(v, 2), "ratio": round(v / base, 3)} for k, v in med.items()}
        for k, v in med.items():
            print(f"batch {batch}: {k:40s} {v:8.2f} ms  x{v / base:.2f}  ({macs[k]} GMAC per image)", flush=True)
    return out


def write(result: dict, out: Path | None) -> None:
    from ffeval.machine import describe

    result = {"machine": describe(), **result}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--now", type=Path, required=True, help="a checkpoint trained with today's fftrain defaults")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from ffeval.machine import describe, one_line
    from fftrain import checkpoint
    from fftrain.model import AnomalyModel

    print(f"machine: {one_line(describe())}", flush=True)
    now, _ = checkpoint.load(args.now)
    then_config = type(now.config).model_validate({
        **now.config.model_dump(), "flow_steps": 8, "memory_bank": "off", "memory_bank_vectors": 0,
        "score_strides": (4, 8, 16), "flow_hidden_channels": None})
    torch.manual_seed(0)
    then = AnomalyModel(then_config, load_pretrained=False)
    label = f"today's default ({args.now}, bank: {now.config.memory_bank_vectors} vectors)"
    result = time_models({"issue 21's default (8 steps, no bank, every stride)": then, label: now}, args.rounds)
    write({"now": str(args.now), **result}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
