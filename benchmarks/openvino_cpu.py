"""Every CPU backend and precision of one model, speed and accuracy, in one process.

    python benchmarks/openvino_cpu.py --model runs/demo/model.onnx [--int8 runs/int8/model.int8-cpu.onnx]
        [--int8-all runs/int8all/model.int8-cpu.onnx] [--bf16 runs/bf16/model.bf16.onnx] [--data elpv:mono] [--threads 2] [--json FILE] [--profile]

Speed: model-only (``backend.run`` on a uint8 batch at the model size), batch 1 and 8, every
configuration timed round by round in turn (interleaved: a neighbour's load slows them all
alike), median per configuration. Accuracy: the test split of ``--data`` through each
configuration: image AUROC, Spearman rank correlation of the scores with ONNX Runtime FP32,
worst map error as a fraction of the FP32 map's peak (max over all pixels of all images, the
FP16 gate's measure). ``--profile``: OpenVINO's per-node times of the fastest configuration
whose AUROC is within 0.01 of FP32, summed by stage (backbone / flows / head) and layer type.
Prints the machine; writes everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ffcore.data import load_batch, resolve
from ffcore.metrics import roc_auc
from ffcore.rankcorr import spearman
from ffcore.timing import interleaved
from ffrt.backends import create_backend
from ffrt.backends.cpuchoice import cpu_signature
from ffrt.metafile import read_onnx_meta


def configurations(args) -> list[tuple[str, Path, str, str, dict]]:
    """(label, model, backend, precision, options); the first is the reference (ORT FP32)."""
    fp32 = Path(args.model)
    rows = [("ORT FP32", fp32, "onnxruntime-cpu", "fp32", {}),
            ("OV FP32", fp32, "openvino", "fp32", {}),
            ("OV BF16 whole graph", fp32, "openvino", "bf16", {"keep_fp32": "none"}),
            ("OV BF16, head FP32", fp32, "openvino", "bf16", {"keep_fp32": "head"}),
            ("OV BF16, flows+head FP32", fp32, "openvino", "bf16", {"keep_fp32": "flows"})]
    if args.int8:
        q = Path(args.int8)
        rows += [("ORT INT8-cpu", q, "onnxruntime-cpu", "fp32", {}),
                 ("OV INT8-cpu (float parts FP32)", q, "openvino", "fp32", {}),
                 ("OV INT8-cpu (float parts BF16, head FP32)", q, "openvino", "bf16", {"keep_fp32": "head"})]
    if args.int8_all:
        q = Path(args.int8_all)
        rows += [("ORT INT8-cpu, flows INT8 too", q, "onnxruntime-cpu", "fp32", {}),
                 ("OV INT8-cpu, flows INT8 too (float parts FP32)", q, "openvino", "fp32", {}),
                 ("OV INT8-cpu, flows INT8 too (float parts BF16, head FP32)", q, "openvino", "bf16",
                  {"keep_fp32": "head"})]
    if args.bf16:
        b = Path(args.bf16)
        rows += [("OV BF16 re-fit head, head FP32", b, "openvino", "bf16", {"keep_fp32": "head"}),
                 ("OV BF16 re-fit head, flows+head FP32", b, "openvino", "bf16", {"keep_fp32": "flows"}),
                 ("OV BF16 re-fit head, whole graph", b, "openvino", "bf16", {"keep_fp32": "none"})]
    return rows


def machine() -> dict:
    import onnxruntime
    import openvino

    load = None
    try:
        load = float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        pass
    return {"cpu": cpu_signature(), "logical_cpus": len(__import__("os").sched_getaffinity(0)),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.get_version().split("-")[0], "load_average_1min": load}


def speed(backends: dict, meta, batches: list[int], rounds: dict[int, int], settle_s: float) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for n in batches:
        x = rng.integers(0, 256, size=(n, meta.input.height, meta.input.width, 3), dtype=np.uint8)
        # warm-up (and OpenVINO's compile for this batch size), then one call of each per round
        times = interleaved({label: (lambda b=b: b.run(x)) for label, b in backends.items()}, rounds=rounds[n],
                            warmup=2, settle_s=settle_s, rewarm=1)
        out[n] = {label: {"ms_p50": float(np.median(t)), "img_per_s": 1000.0 * n / float(np.median(t)),
                          "rounds": len(t)} for label, t in times.items()}
    return out


def predict_batch_speed(fp32: Path, path: Path, meta, threads: int, precision: str, options: dict, images: int,
                        chunk: int, rounds: int, settle_s: float) -> dict:
    """predict_batch's inference (``run_chunks``: ``images`` in chunks of ``chunk``): ONNX Runtime FP32,
    and OpenVINO with the latency hint (chunks one after another) and with the throughput hint
    (chunks on parallel infer requests), interleaved."""
    x = np.random.default_rng(2).integers(0, 256, size=(images, meta.input.height, meta.input.width, 3), dtype=np.uint8)
    chunks = [x[i:i + chunk] for i in range(0, images, chunk)]
    variants = {"latency hint, chunks in turn": {}, "throughput hint, parallel infer requests": {
        "performance_hint": "throughput"}}
    backends = {"ORT FP32 (model.onnx), chunks in turn": create_backend("onnxruntime-cpu", fp32, read_onnx_meta(fp32),
                                                                         threads)[0]}
    backends.update({k: create_backend("openvino", path, meta, threads, precision=precision,
                                       options={**options, **v})[0] for k, v in variants.items()})
    times = interleaved({k: (lambda b=b: b.run_chunks(chunks)) for k, b in backends.items()}, rounds=rounds, warmup=2,
                        settle_s=settle_s)
    requests = {k: b._compiled(chunk).size if b.name == "openvino" else 1 for k, b in backends.items()}
    return {k: {"ms_p50": float(np.median(t)), "img_per_s": 1000.0 * images / float(np.median(t)),
                "infer_requests": requests[k]} for k, t in times.items()}


def accuracy(backends: dict, images: np.ndarray, labels: np.ndarray, ref_label: str, chunk: int = 8) -> dict:
    runs = {}
    for label, b in backends.items():
        maps, scores = zip(*(b.run(images[i:i + chunk]) for i in range(0, len(images), chunk)))
        runs[label] = (np.concatenate(maps), np.concatenate(scores).astype(np.float64))
    m32, s32 = runs[ref_label]
    peak = float(np.abs(m32).max())
    return {label: {"auroc": roc_auc(labels, s), "spearman_vs_fp32": spearman(s32, s),
                    "map_max_rel": float(np.abs(m - m32).max()) / peak, "nonfinite": int((~np.isfinite(m)).sum())}
            for label, (m, s) in runs.items()}


def stage_of(backend, keep_sets: dict) -> dict:
    """Runtime node name -> "backbone" / "flows" / "head" (from the original nodes it fused)."""
    from ffrt.backends import ovgraph

    out = {}
    for compiled in backend._shapes.values():
        for part in compiled.parts:
            for node in ovgraph.runtime_precisions(part):
                orig = set(node.originals)
                out[node.name] = ("head" if orig & keep_sets["head"] else "flows" if orig & keep_sets["flows"]
                                  else "backbone")
    return out


def profile(label: str, path: Path, precision: str, options: dict, meta, threads: int, n: int) -> dict:
    import openvino as ov

    from ffrt.backends import ovgraph

    be, _ = create_backend("openvino", path, meta, threads, precision=precision,
                           options={**options, "perf_count": True})
    x = np.random.default_rng(1).integers(0, 256, size=(n, meta.input.height, meta.input.width, 3), dtype=np.uint8)
    for _ in range(3):
        be.run(x)
    sets = {k: set(ovgraph.split(ov.Core().read_model(str(path)), k).tail_nodes) for k in ("head", "flows")}
    stages = stage_of(be, sets)
    runs = [be.profile(x) for _ in range(5)]
    by_stage, by_type = defaultdict(list), defaultdict(list)
    for run in runs:
        s_acc, t_acc = defaultdict(float), defaultdict(float)
        for row in run:
            if row["kernel"] in ("undef", "unknown_undef") and row["ms"] == 0:
                continue
            s_acc[stages.get(row["node"], "other")] += row["ms"]
            t_acc[f"{row['type']} ({row['kernel']})"] += row["ms"]
        for k, v in s_acc.items():
            by_stage[k].append(v)
        for k, v in t_acc.items():
            by_type[k].append(v)
    stage_ms = {k: float(np.median(v)) for k, v in by_stage.items()}
    type_ms = dict(sorted(((k, float(np.median(v))) for k, v in by_type.items()), key=lambda kv: -kv[1])[:15])
    return {"configuration": label, "batch": n, "ms_by_stage": stage_ms, "top_layer_types_ms": type_ms,
            "total_ms": float(sum(stage_ms.values()))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--int8")
    p.add_argument("--int8-all", help="an int8-cpu file with the flows' convolutions INT8 too "
                   "(ffexport --int8 --int8-scope all)")
    p.add_argument("--bf16")
    p.add_argument("--data", default="elpv:mono")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds at batch 1 (fewer at larger batches)")
    p.add_argument("--settle-ms", type=float, default=50.0, help="untimed pause after every call (default 50)")
    p.add_argument("--json")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--speed-only", action="store_true", help="no accuracy, no predict_batch section (a model without data)")
    args = p.parse_args(argv)

    info = machine()
    print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs; onnxruntime {info['onnxruntime']}, "
          f"openvino {info['openvino']}; load {info['load_average_1min']}; {args.threads} threads", flush=True)
    rows = configurations(args)
    backends, described = {}, {}
    for label, path, name, precision, options in rows:
        be, _ = create_backend(name, path, read_onnx_meta(path), args.threads, precision=precision, options=options)
        backends[label], described[label] = be, {"model": str(path), "backend": be.description,
                                                 "precision": be.precision, "detail": be.precision_detail}
    meta = read_onnx_meta(args.model)
    batches = [int(b) for b in args.batches.split(",")]
    t0 = time.time()
    timing = speed(backends, meta, batches, {n: max(5, args.rounds // max(1, n // 2)) for n in batches},
                   args.settle_ms / 1000.0)
    print(f"speed measured in {time.time() - t0:.0f} s", flush=True)
    if args.speed_only:
        for label in backends:
            print(f"| {label} | " + " | ".join(f"{timing[n][label]['img_per_s']:.1f} (x{timing[n][label]['img_per_s'] / timing[n][rows[0][0]]['img_per_s']:.2f})"
                                           for n in batches) + " |")
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": info, "threads": args.threads, "configurations": described,
                                                   "speed": {str(n): v for n, v in timing.items()}}, indent=1))
        return 0
    label = rows[-3][0] if args.bf16 else rows[3][0]  # BF16 with the head FP32 (the re-fit file's if given)
    _, bpath, _, bprec, bopts = next(r for r in rows if r[0] == label)
    async_speed = predict_batch_speed(Path(args.model), bpath, read_onnx_meta(bpath), args.threads, bprec, bopts, 32, 8,
                                      max(3, args.rounds // 4), args.settle_ms / 1000.0)
    print(f"predict_batch of 32 images in chunks of 8, {label}: " + "; ".join(
        f"{k} ({v['infer_requests']} requests) {v['img_per_s']:.1f} img/s" for k, v in async_speed.items()), flush=True)
    test = resolve(args.data).test
    images = load_batch(test, (meta.input.height, meta.input.width), meta.input.resize_mode)
    labels = np.array([s.label for s in test])
    t0 = time.time()
    acc = accuracy(backends, images, labels, rows[0][0])
    print(f"accuracy on {len(images)} test images of {args.data} ({int(labels.sum())} defective) in "
          f"{time.time() - t0:.0f} s\n", flush=True)
    ref = rows[0][0]
    head = "| configuration | " + " | ".join(f"batch {n} img/s (x ORT FP32)" for n in batches) + \
        " | image AUROC | Spearman vs FP32 | worst map error (of FP32 peak) |"
    print(head + "\n|" + "---|" * (head.count("|") - 1))
    for label in backends:
        speeds = " | ".join(f"{timing[n][label]['img_per_s']:.1f} (x{timing[n][label]['img_per_s'] / timing[n][ref]['img_per_s']:.2f})"
                            for n in batches)
        a = acc[label]
        print(f"| {label} | {speeds} | {a['auroc']:.4f} | {a['spearman_vs_fp32']:.4f} | {100 * a['map_max_rel']:.1f}% |")
    report = {"machine": info, "threads": args.threads, "data": args.data, "test_images": len(images),
              "configurations": described, "speed": {str(n): v for n, v in timing.items()}, "accuracy": acc,
              "predict_batch_32": async_speed,
              "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:]))}
    if args.profile:
        a32 = acc[ref]["auroc"]
        ok = [lab for lab in backends if abs(acc[lab]["auroc"] - a32) <= 0.01 and backends[lab].name == "openvino"]
        n = max(batches)
        best = max(ok, key=lambda lab: timing[n][lab]["img_per_s"]) if ok else None
        if best:
            _, path, _, precision, options = next(r for r in rows if r[0] == best)
            report["profile"] = profile(best, path, precision, options, read_onnx_meta(path), args.threads, n)
            pr = report["profile"]
            print(f"\nprofile of {best}, batch {n} (OpenVINO PERF_COUNT, median of 5 runs): "
                  + ", ".join(f"{k} {v:.1f} ms ({100 * v / pr['total_ms']:.0f}%)" for k, v in pr["ms_by_stage"].items()))
            for k, v in pr["top_layer_types_ms"].items():
                print(f"  {v:7.2f} ms  {k}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
