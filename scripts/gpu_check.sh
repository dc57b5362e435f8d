#!/usr/bin/env bash
# One command for a GPU host (the line PC). Every step runs and reports PASS/FAIL/SKIP; a failing
# step does not stop the next ones (an install error is a result, not the end of the check):
#
#   driver      nvidia-smi: driver, GPUs
#   install     a separate venv (.venv-gpu: onnxruntime-gpu cannot live next to the CPU onnxruntime)
#               with pip install -e ".[gpu,train,demo,dev]" (the gpu extra: README "GPU install")
#   doctor      ffrt doctor (what this machine has, which backends run and why not)
#   cpu-tests   the CPU test suite on this GPU host (it must pass or skip here too)
#   gpu-tests   pytest -m gpu: engine builds, parity with ONNX Runtime, batches, threads, cache,
#               TF32 off in the sidecar, no leak over 100 create/close cycles, device selection
#   bench       engines FP32/FP16/INT8 and their batch-1/8 latency with ffrt.Detector
#   ffbench     per-stage figures in ffbench's JSON schema
#
# Everything is saved under runs/gpu_check/<UTC time>/ (report.md ends with the step table).
#
#   scripts/gpu_check.sh [model.pt]
#
# model.pt: a checkpoint to benchmark (default: a 256x256 EfficientNet-Lite0 FastFlow trained
# here for 1 epoch on ELPV mono cells: latency does not depend on how well it is trained).
# Environment: PYTHON (default python3) to create .venv-gpu; GPU_CHECK_ITERS (default 200);
# GPU_CHECK_PIP_ARGS extra pip arguments (e.g. --extra-index-url https://pypi.nvidia.com);
# GPU_CHECK_OUT / GPU_CHECK_VENV override the report folder and the venv.
# Exit code: 0 if every step passed, else 1.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${GPU_CHECK_OUT:-$ROOT/runs/gpu_check/$STAMP}"
mkdir -p "$OUT"
CKPT="${1:-}"
ITERS="${GPU_CHECK_ITERS:-200}"
VENV="${GPU_CHECK_VENV:-$ROOT/.venv-gpu}"
PY="$VENV/bin/python"
STEPS=()

# step NAME FUNCTION: run it, log to $OUT/NAME.log, record PASS/FAIL (SKIP without the venv).
step() {
    local name="$1"; shift
    echo "== gpu_check: $name"
    if [ "$name" != driver ] && [ "$name" != install ] && [ ! -x "$PY" ]; then
        STEPS+=("$name SKIP (no $VENV: the install step failed)"); return 0
    fi
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then STEPS+=("$name PASS"); else STEPS+=("$name FAIL (exit $rc, log: $name.log)"); fi
    return 0
}

driver() {
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "nvidia-smi not found: install the NVIDIA driver (R580 or newer for the CUDA 13 gpu extra)"
        return 2
    fi
    nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total --format=csv
}

install() {
    [ -x "$PY" ] || "${PYTHON:-python3}" -m venv "$VENV" || return 1
    "$PY" -m pip install --upgrade pip >/dev/null || return 1
    # shellcheck disable=SC2086
    "$PY" -m pip install ${GPU_CHECK_PIP_ARGS:-} -e ".[gpu,train,demo,dev]" || return 1
    "$PY" - <<'EOF'
import importlib.metadata as md
for dist in ("ffrt", "onnxruntime-gpu", "tensorrt-cu13", "tensorrt-cu13-libs", "tensorrt-cu13-bindings", "cuda-python",
             "cuda-bindings", "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cublas", "pycuda", "onnx", "torch"):
    try:
        print(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"{dist} not installed")
EOF
}

doctor() { "$VENV/bin/ffrt" doctor; }
cpu_tests() { "$PY" -m pytest -q -m "not gpu" tests --junitxml="$OUT/pytest-cpu.xml"; }
gpu_tests() { "$PY" -m pytest -m gpu tests -rs -v -s --junitxml="$OUT/pytest-gpu.xml"; }

bench() {
    "$PY" - "$OUT" "$CKPT" "$ITERS" <<'EOF'
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
from ffrt.gpu.engine import read_engine_info

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
}

ffbench_step() {
    local rc=0
    for variant in model model.fp16; do
        if [ -f "$OUT/model/$variant.onnx" ]; then
            "$VENV/bin/ffbench" "$OUT/model/$variant.onnx" --backend tensorrt --batch 1,8 \
                --json "$OUT/ffbench-$variant.json" --plot "$OUT/ffbench-$variant.png" || rc=1
        else
            echo "no $variant.onnx (the bench step did not export it)"; rc=1
        fi
    done
    return $rc
}

echo "== gpu_check: report in $OUT"
step driver driver
step install install
step doctor doctor
step cpu-tests cpu_tests
step gpu-tests gpu_tests
step bench bench
step ffbench ffbench_step

{
    echo
    echo "## steps"
    echo
    for s in "${STEPS[@]}"; do echo "- $s"; done
} | tee -a "$OUT/report.md"
echo "== gpu_check: report saved to $OUT"
for s in "${STEPS[@]}"; do
    case "$s" in *" PASS") ;; *) exit 1 ;; esac
done
exit 0
