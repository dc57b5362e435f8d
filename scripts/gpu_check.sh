#!/usr/bin/env bash
# One command for a GPU host (the line PC): install the gpu extra, run the GPU tests, build
# TensorRT engines and measure their latency with ffrt.Detector at batch 1 and 8, and save
# a report under runs/gpu_check/<UTC time>/ (report.md, report.json, pytest log, junit xml).
#
#   scripts/gpu_check.sh [model.pt]
#
# model.pt: a checkpoint to benchmark (default: a 256x256 EfficientNet-Lite0 FastFlow trained
# here for 1 epoch on ELPV mono cells: latency does not depend on how well it is trained).
# Environment: PYTHON (default python3) to create .venv; GPU_CHECK_ITERS (default 200).
# Exit code: that of pytest (GPU tests), or of the benchmark if the tests passed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$ROOT/runs/gpu_check/$STAMP"
mkdir -p "$OUT"
CKPT="${1:-}"
ITERS="${GPU_CHECK_ITERS:-200}"

echo "== gpu_check: report in $OUT"
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: error: nvidia-smi not found: this script needs an NVIDIA GPU host with its driver installed" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.csv"

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --upgrade pip >/dev/null
.venv/bin/python -m pip install -e ".[gpu,train,demo,dev]" 2>&1 | tail -n 3
.venv/bin/python - <<'EOF' | tee "$OUT/versions.txt"
import importlib.metadata as md
for dist in ("ffrt", "tensorrt", "pycuda", "onnxruntime-gpu", "onnx", "torch"):
    try:
        print(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"{dist} not installed")
import onnxruntime
print("onnxruntime providers", onnxruntime.get_available_providers())
EOF

echo "== GPU tests (pytest -m gpu)"
set +e
.venv/bin/python -m pytest -m gpu tests -rs -v --junitxml="$OUT/pytest-gpu.xml" 2>&1 | tee "$OUT/pytest-gpu.log"
TESTS_RC=${PIPESTATUS[0]}
set -e

echo "== engines and latency (ffrt.Detector stats, batch 1 and 8, $ITERS calls each)"
set +e
.venv/bin/python - "$OUT" "$CKPT" "$ITERS" <<'EOF' 2>&1 | tee "$OUT/bench.log"
import json, platform, sys, time
from pathlib import Path

import numpy as np

out, ckpt, iters = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if not ckpt:
    from fftrain.config import FastFlowConfig
    from fftrain.data import elpv
    from fftrain.train import TrainSettings, train_and_save

    split = elpv("mono")
    split.train, split.val = split.train[:64], split.val[:16]
    ckpt = out / "bench.pt"
    train_and_save(FastFlowConfig(), split, TrainSettings(epochs=1, batch_size=16, progress=False), ckpt)
ckpt = Path(ckpt)

from ffexport.cli import main as ffexport

model_dir = out / "model"
code = ffexport(["--ckpt", str(ckpt), "--out", str(model_dir), "--batch-max", "8", "--fp16", "--engine",
                 "--batch-opt", "8", "--timing-cache", str(out / "timing.cache")])
# --fp16 --engine builds model.fp16.engine; build the FP32 engine too.
from ffexport.tensorrt import main as build

code32 = build([str(model_dir / "model.onnx"), "--batch-max", "8", "--batch-opt", "8",
                "--timing-cache", str(out / "timing.cache")])

# INT8: Q/DQ files with re-fit heads (2 epochs keep the check short), then the TensorRT plan
# of the -trt encoding; its scores are compared with ONNX Runtime CPU on the same file below.
code8 = ffexport(["--ckpt", str(ckpt), "--out", str(model_dir / "int8"), "--batch-max", "8", "--int8",
                  "--refit-epochs", "2", "--force"])
code8e = build([str(model_dir / "int8" / "model.int8-trt.onnx"), "--batch-max", "8", "--batch-opt", "8",
                "--timing-cache", str(out / "timing.cache")]) if code8 == 0 else code8

from ffrt import Detector
from ffrt.engine import read_engine_info

from fftrain.data import elpv, load_batch

cells = list(load_batch(elpv("mono").test[:8], 256)[..., ::-1])  # BGR like a camera SDK
results = {"ffexport_exit": code, "fp32_engine_exit": code32, "int8_export_exit": code8, "int8_engine_exit": code8e,
           "host": platform.node(), "rows": []}
int8_onnx = model_dir / "int8" / "model.int8-trt.onnx"
if code8e == 0:
    # TensorRT's INT8 kernels vs ONNX Runtime CPU on the same Q/DQ file (what the head was fit to).
    ref = Detector(int8_onnx, backend="onnxruntime-cpu", resize_outputs=False).predict_batch(cells)
    got = Detector(model_dir / "int8" / "model.int8-trt.engine", resize_outputs=False).predict_batch(cells)
    r, g = np.array([x.score for x in ref]), np.array([x.score for x in got])
    results["int8_trt_vs_ort_cpu"] = {"max_rel_score_diff": float(np.max(np.abs(g - r) / np.abs(r))),
                                      "scores_ort": r.tolist(), "scores_trt": g.tolist()}
    print(json.dumps(results["int8_trt_vs_ort_cpu"]))
variants = [
    ("tensorrt fp32", model_dir / "model.engine", "auto"),
    ("tensorrt fp16", model_dir / "model.fp16.engine", "auto"),
    ("onnxruntime-tensorrt fp16", model_dir / "model.fp16.onnx", "onnxruntime-tensorrt"),
    ("onnxruntime-cuda fp32", model_dir / "model.onnx", "onnxruntime-cuda"),
    ("onnxruntime-cuda fp16", model_dir / "model.fp16.onnx", "onnxruntime-cuda"),
    ("tensorrt int8", model_dir / "int8" / "model.int8-trt.engine", "auto"),
]
for label, path, backend in variants:
    row = {"variant": label, "model": str(path)}
    try:
        if path.suffix == ".engine":
            info = read_engine_info(path)
            row.update(tensorrt=info.tensorrt_version, gpu=info.gpu_name, sm=info.compute_capability)
        for batch in (1, 8):
            det = Detector(path, backend=backend, resize_outputs=False)  # fresh stats window per batch size
            row["backend"] = det.backend_description
            det.warmup(5, batch_size=batch)  # warmup calls are not in det.stats
            t0 = time.perf_counter()
            for _ in range(iters):
                if batch == 1:
                    det(cells[0])
                else:
                    det.predict_batch(cells[:batch], batch_size=batch)
            wall = time.perf_counter() - t0
            s = det.stats
            row[f"batch{batch}"] = {"p50_ms": s.p50_ms, "p90_ms": s.p90_ms, "p99_ms": s.p99_ms,
                                    "fps_wall": batch * iters / wall}
    except Exception as e:  # noqa: BLE001 - report every variant, even failing ones
        row["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(row))
    results["rows"].append(row)

(out / "report.json").write_text(json.dumps(results, indent=2))
lines = ["# ffrt gpu_check", "", f"host {results['host']}, ffexport exit {code}, fp32 engine exit {code32}", "",
         "| variant | backend | b1 p50 ms | b1 p99 ms | b1 FPS | b8 p50 ms | b8 p99 ms | b8 FPS |",
         "|---|---|---|---|---|---|---|---|"]
for r in results["rows"]:
    if "error" in r:
        lines.append(f"| {r['variant']} | error: {r['error'][:120]} | | | | | | |")
        continue
    b1, b8 = r["batch1"], r["batch8"]
    lines.append(f"| {r['variant']} | {r['backend']} | {b1['p50_ms']:.2f} | {b1['p99_ms']:.2f} | {b1['fps_wall']:.0f} "
                 f"| {b8['p50_ms']:.2f} | {b8['p99_ms']:.2f} | {b8['fps_wall']:.0f} |")
(out / "report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if code == 0 and code32 == 0 and code8e == 0 else 1)
EOF
BENCH_RC=${PIPESTATUS[0]}

# Per-stage figures in the stable ffbench schema, for the GPU rows of benchmarks/README.md.
for variant in model model.fp16; do
    if [ -f "$OUT/model/$variant.onnx" ]; then
        .venv/bin/ffbench "$OUT/model/$variant.onnx" --backend tensorrt --batch 1,8 \
            --json "$OUT/ffbench-$variant.json" --plot "$OUT/ffbench-$variant.png" 2>&1 | tee -a "$OUT/bench.log"
    fi
done
set -e

{
    echo
    echo "GPU tests exit code: $TESTS_RC (log: pytest-gpu.log)"
    echo "benchmark exit code: $BENCH_RC (log: bench.log)"
} | tee -a "$OUT/report.md"
echo "== gpu_check: report saved to $OUT"
if [ "$TESTS_RC" -ne 0 ]; then exit "$TESTS_RC"; fi
exit "$BENCH_RC"
