"""Model-only latency of several ONNX files, interleaved in one process (ONNX Runtime CPU).

    python benchmarks/ablation/latency_ab.py NAME=model.onnx NAME=model.onnx [--batch 1,8] [--rounds 30]

Per batch size, each round runs every model once in turn (ffcore.timing, the harness
ffbench uses), so a load change on a shared machine hits all of them alike; medians and ratios to the first model are printed with
the machine, and saved as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ffcore.timing import interleaved
from ffrt.metafile import read_onnx_meta


def cpu() -> str:
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = line
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8") if f" {f}" in flags]
    return f"{name}, {os.cpu_count()} cores, {' '.join(isa)}" if flags else platform.processor()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="NAME=path.onnx")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    sessions = {}
    for spec in args.models:
        name, path = spec.split("=", 1)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        meta = read_onnx_meta(path)
        sessions[name] = (ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]),
                          (meta.input.height, meta.input.width), meta)
    rng = np.random.default_rng(0)
    times = {}
    for b in batches:  # the models in interleaved rounds (ffcore.timing), two warm-up calls each
        inputs = {name: rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8) for name, (_, (h, w), _) in sessions.items()}
        ms = interleaved({name: (lambda s=sess, x=inputs[name]: s.run(None, {"image": x}))
                          for name, (sess, _, _) in sessions.items()}, rounds=args.rounds, warmup=2)
        times.update({(name, b): v for name, v in ms.items()})
    first = next(iter(sessions))
    report = {"machine": cpu(), "threads": args.threads, "rounds": args.rounds, "rows": []}
    print(f"machine: {report['machine']}; ONNX Runtime {ort.__version__}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds")
    for b in batches:
        base = float(np.median(times[(first, b)]))
        for name, (_, (h, w), meta) in sessions.items():
            med = float(np.median(times[(name, b)]))
            row = {"model": name, "input": f"{h}x{w}", "backbone": meta.backbone.name, "batch": b,
                   "p50_ms": med, "p90_ms": float(np.percentile(times[(name, b)], 90)),
                   "img_per_s": b * 1000 / med, "vs_first": med / base}
            report["rows"].append(row)
            print(f"batch {b}  {name:24s} {h}x{w} {meta.backbone.name:18s} p50 {med:8.1f} ms  "
                  f"p90 {row['p90_ms']:8.1f} ms  {row['img_per_s']:6.1f} img/s  x{row['vs_first']:.2f} of {first}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
