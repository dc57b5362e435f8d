"""The timing step of run_peers.py (runs in the peers venv): each runtime's rows interleaved among
themselves in a process of their own, per batch, the runtimes one after the other; then the
isolation check (ffrt's ONNX Runtime row interleaved with PyTorch eager in one process, against
its figure alone)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import build_models
import runners as R
from report import bars, eager_ratios, wider_than_avx2
from timing import interleaved

VERSIONS = ("anomalib", "openvino", "onnxruntime", "torch", "torchvision", "timm", "onnx", "numpy")

FFRT_R18_OV = "ffrt ResNet-18 FastFlow on ffrt's OpenVINO backend,"
FFRT_R18_ORT = "ffrt ResNet-18 FastFlow on ONNX Runtime (FP32)"
#: Each runtime's rows are timed in a process of their own, one runtime after the other: in one
#: process a runtime is timed against the others' spinning worker threads (PyTorch's OpenMP
#: pool next to ONNX Runtime's), which the settle pause does not always cure.
ENGINES = ("onnxruntime", "openvino", "torch")
#: The isolation check's process (ONNX Runtime and PyTorch rows interleaved in one process).
MIXED = "mixed"


@dataclass(frozen=True)
class Spec:
    """A row to time, not yet loaded: the runtime it runs on and how to build its runner."""

    engine: str
    build: Callable[[], R.Runner]
FFRT_LITE0_OV = "ffrt default EfficientNet-Lite0 model on ffrt's OpenVINO backend,"


def frames(count: int) -> np.ndarray:
    """uint8 [count, 256, 256, 3] RGB: ELPV mono test cells, resized the way ffrt resizes."""
    from fftrain.data import load_batch, resolve

    test = resolve("elpv:mono").test
    return load_batch(test[:count], build_models.IMAGE_SIZE)


#: ``--avx2-proxy``: oneDNN (OpenVINO's convolutions) limited to these kernels via its documented
#: ONEDNN_MAX_CPU_ISA variable (oneapi-src.github.io/oneDNN/dev_guide_cpu_dispatcher_control.html). ONNX
#: Runtime's MLAS and PyTorch have no such switch, so the proxy times OpenVINO FP32 rows only.
PROXY_ISA = "AVX2"
PROXY_ENV = "ONEDNN_MAX_CPU_ISA"


def proxy_runners(args, work: Path, batch: int) -> list[Spec]:
    """The non-AMX/VNNI bar's two rows, both FP32 on OpenVINO (the proxy can limit only its kernels)."""
    a, f = build_models.anomalib_paths(work), build_models.ffrt_paths(work)
    return [Spec("openvino", lambda: R.anomalib_openvino(a["openvino"], args.threads, force_fp32=True, batch=batch)),
            Spec("openvino", lambda: R.ffrt_openvino(f["onnx"], args.threads, "resnet18", f"{FFRT_R18_OV} FP32", "fp32"))]


def proxy_kernels(runners: list, batch: int) -> tuple[dict, list[str]]:
    """{row key: {convolution kernel: count}} and the rows whose kernels are not AVX2-only."""
    kernels = {r.key: r.conv_kernels(batch) for r in runners if r.conv_kernels}
    wider = [k for k, ks in kernels.items() if wider_than_avx2(ks)]
    return kernels, wider


def shared_runners(args, work: Path, lite0: Path | None) -> list[Spec]:
    """Runners whose engine handles every batch with one loaded model (ONNX Runtime, PyTorch, and
    ffrt's OpenVINO backend, which compiles each batch size itself: its default static shapes)."""
    a, f = build_models.anomalib_paths(work), build_models.ffrt_paths(work)
    t = args.threads
    out = [Spec("onnxruntime", lambda: R.anomalib_onnxruntime(a["onnx"], t)),
           Spec("onnxruntime", lambda: R.ffrt_onnxruntime(f["onnx"], t, "resnet18", FFRT_R18_ORT)),
           Spec("openvino", lambda: R.ffrt_openvino(f["onnx"], t, "resnet18",
                                                   f"{FFRT_R18_OV} BF16, head FP32 (ffrt's default BF16)", "bf16")),
           Spec("openvino", lambda: R.ffrt_openvino(f["onnx"], t, "resnet18", f"{FFRT_R18_OV} BF16, whole graph (not gated)",
                                                   "bf16", keep_fp32="none")),
           Spec("openvino", lambda: R.ffrt_openvino(f["onnx"], t, "resnet18", f"{FFRT_R18_OV} FP32", "fp32"))]
    if f["int8"].is_file():
        out += [Spec("openvino", lambda: R.ffrt_openvino(
                    f["int8"], t, "resnet18", f"{FFRT_R18_OV} model.int8-cpu.onnx (every convolution INT8), float parts FP32 "
                    "(what auto runs as ffexport writes it)", "fp32", file="int8")),
                Spec("openvino", lambda: R.ffrt_openvino(
                    f["int8"], t, "resnet18", f"{FFRT_R18_OV} model.int8-cpu.onnx (every convolution INT8), float parts BF16, "
                    "head FP32 (auto runs it once its thresholds are set in BF16: ffcalib thresholds)", "bf16", file="int8"))]
    if lite0 is not None:
        out += [Spec("onnxruntime", lambda: R.ffrt_onnxruntime(lite0, t, "lite0",
                                                              "ffrt default EfficientNet-Lite0 model on ONNX Runtime (FP32)")),
                Spec("openvino", lambda: R.ffrt_openvino(lite0, t, "lite0", f"{FFRT_LITE0_OV} BF16, head FP32", "bf16")),
                Spec("openvino", lambda: R.ffrt_openvino(lite0, t, "lite0", f"{FFRT_LITE0_OV} BF16, whole graph (not gated)",
                                                        "bf16", keep_fp32="none"))]
    if not args.no_torch:
        out += [Spec("torch", lambda: R.anomalib_torch(a["state"], t)), Spec("torch", lambda: R.ffrt_torch(f["ckpt"], t))]
    return out


def batch_runners(args, work: Path, batch: int) -> list[Spec]:
    """anomalib's OpenVINO runners for this batch: compiled for it (static) or as exported (dynamic)."""
    xml = build_models.anomalib_paths(work)["openvino"]
    return [Spec("openvino", lambda: R.anomalib_openvino(xml, args.threads, force_fp32=False, batch=batch)),
            Spec("openvino", lambda: R.anomalib_openvino(xml, args.threads, force_fp32=False, batch=None)),
            Spec("openvino", lambda: R.anomalib_openvino(xml, args.threads, force_fp32=True, batch=batch))]


def mixed_runners(args, work: Path) -> list[Spec]:
    """The isolation check's process: ffrt's ResNet-18 on ONNX Runtime and the same checkpoint in
    PyTorch eager, interleaved in ONE process."""
    f = build_models.ffrt_paths(work)
    return [Spec(MIXED, lambda: R.ffrt_onnxruntime(f["onnx"], args.threads, "resnet18", FFRT_R18_ORT)),
            Spec(MIXED, lambda: R.ffrt_torch(f["ckpt"], args.threads))]


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def row_info(r) -> dict:
    return {"key": r.key, "label": r.label, "model": r.model, "side": r.side, "engine": r.engine,
            "precision": r.precision, "info": r.info}


ORDER = ["anomalib_ort", "anomalib_ov_fp32", "anomalib_ov_default_dynamic", "anomalib_ov_default", "anomalib_torch",
         "ffrt_resnet18_ort", "ffrt_resnet18_ov_fp32", "ffrt_resnet18_ov_bf16", "ffrt_resnet18_ov_bf16_all",
         "ffrt_resnet18_ov_int8_fp32", "ffrt_resnet18_ov_int8_bf16",
         "ffrt_resnet18_torch", "ffrt_lite0_ort", "ffrt_lite0_ov_bf16", "ffrt_lite0_ov_bf16_all"]


def _setup(args) -> tuple[list[int], Path | None, bool, list[str]]:
    """(batches, the Lite0 model or None, proxy run?, notes): what parent and children agree on."""
    batches = [int(b) for b in args.batches.split(",")]  # checked by run_peers' parser
    lite0 = args.lite0_model if args.lite0_model.is_file() else None
    notes = []
    if lite0 is None:
        notes.append(f"{args.lite0_model} not found (run `make demo`): the EfficientNet-Lite0 rows are left out")
    proxy = getattr(args, "avx2_proxy", False)
    if proxy:
        if os.environ.get(PROXY_ENV) != PROXY_ISA:
            raise SystemExit(f"--avx2-proxy: {PROXY_ENV}={PROXY_ISA} must be set before OpenVINO loads (run_peers.py sets it)")
        notes.append(f"AVX2 proxy: {PROXY_ENV}={PROXY_ISA} limits OpenVINO's oneDNN kernels to AVX2 on this CPU; "
                     "the kernels are the ones an AVX2-only CPU runs, its caches, clocks and memory are not. "
                     "OpenVINO FP32 rows only.")
        lite0 = None
    return batches, lite0, proxy, notes


def time_engine(args, engine: str) -> dict:
    """In this process: every row of ``engine`` (or the ``MIXED`` pair), interleaved round by
    round, per batch. {"rows": {key: info}, "results": {batch: {key: figures}}, "kernels", "notes"}."""
    batches, lite0, proxy, _ = _setup(args)
    data = frames(max(batches))
    mine = (lambda specs: specs) if engine == MIXED else (lambda specs: [s for s in specs if s.engine == engine])
    shared = [s.build() for s in mine(mixed_runners(args, args.work) if engine == MIXED else
                                      [] if proxy else shared_runners(args, args.work, lite0))]
    results, rows, kernels, notes = {}, {}, {}, []
    for batch in batches:
        per_batch = [] if engine == MIXED else [
            s.build() for s in mine(proxy_runners(args, args.work, batch) if proxy else batch_runners(args, args.work, batch))]
        runners = shared + per_batch
        if not runners:
            continue
        for r in runners:
            rows.setdefault(r.key, row_info(r))
        print(f"{engine}, batch {batch}: {len(runners)} runners, {args.rounds} rounds", flush=True)
        results[str(batch)] = interleaved(runners, data[:batch], args.rounds, args.warmup, args.settle_ms)
        if proxy:
            kernels[str(batch)], wider = proxy_kernels(runners, batch)
            if wider:
                notes.append(f"batch {batch}: {', '.join(wider)} ran convolution kernels wider than AVX2 "
                             f"({kernels[str(batch)]}): the proxy did not hold for them")
        del per_batch, runners
        gc.collect()
    return {"rows": rows, "results": results, "kernels": kernels, "notes": notes}


def engine_child(args) -> int:
    """``run_peers.py ... --engine-only ENGINE --partial FILE``: :func:`time_engine`, written to FILE."""
    Path(args.partial).write_text(json.dumps(time_engine(args, args.engine_only)))
    return 0


def _in_child(argv: list[str], engine: str) -> dict:
    """One runtime's rows in a process of their own (this script again, with --engine-only)."""
    script = Path(__file__).resolve().parent / "run_peers.py"
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        out = Path(tmp) / f"{engine}.json"
        cmd = [sys.executable, str(script), *argv, "--engine-only", engine, "--partial", str(out)]
        if subprocess.run(cmd).returncode != 0 or not out.is_file():
            raise SystemExit(f"timing the {engine} rows in their own process failed (see above)")
        return json.loads(out.read_text())


def isolation(results: dict, mixed: dict) -> list[dict]:
    """Per batch: ffrt's ResNet-18 on ONNX Runtime alone in its process against interleaved with
    PyTorch eager in one process (ffcore.timing.isolation_check)."""
    from ffcore.timing import isolation_check

    out = []
    for batch, rows in mixed.items():
        alone = results.get(batch, {}).get("ffrt_resnet18_ort")
        together = rows.get("ffrt_resnet18_ort")
        if alone and together:
            check = isolation_check(alone["p50_ms"], together["p50_ms"])
            out.append({"batch": int(batch), "row": "ffrt_resnet18_ort", **check.to_dict(),
                        "line": check.line(f"ffrt ResNet-18 on ONNX Runtime, batch {batch}", "PyTorch eager")})
    return out


def run_timing(args, argv: list[str]) -> dict:
    from ffeval.machine import describe, versions

    batches, lite0, proxy, notes = _setup(args)
    machine = describe()
    print("machine:", machine["cpu"]["model"], "| flags:",
          " ".join(k for k, v in machine["cpu"]["flags"].items() if v), flush=True)
    load_before = _loadavg()
    engines = ["openvino"] if proxy else [e for e in ENGINES if not (e == "torch" and args.no_torch)]
    results: dict[str, dict] = {str(b): {} for b in batches}
    rows, kernels = {}, {}
    for engine in engines:
        part = _in_child(argv, engine)
        rows.update(part["rows"])
        kernels.update(part["kernels"])
        notes += part["notes"]
        for batch, figures in part["results"].items():
            results[batch].update(figures)
    checks = []
    if not proxy and not args.no_torch:
        checks = isolation(results, _in_child(argv, MIXED)["results"])
        notes += [c["line"] for c in checks if c["interfered"]]
    ordered = [rows[k] for k in ORDER if k in rows] + [v for k, v in rows.items() if k not in ORDER]
    report = {
        "schema": "ffrt.peers", "schema_version": 1,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/peers/run_peers.py " + " ".join(a for a in argv if a != "--in-venv"),
        "machine": machine, "software": versions(VERSIONS),
        "configuration": json.loads((args.work / "models.json").read_text()).get("configuration"),
        "models": json.loads((args.work / "models.json").read_text()),
        "lite0_model": str(lite0) if lite0 else None,
        "settings": {"batches": batches, "rounds": args.rounds, "warmup": args.warmup, "threads": args.threads,
                     "settle_ms": args.settle_ms, "inputs": "ELPV mono test cells resized to 256x256 RGB",
                     "timed": "the engine call only (model-only); latency per call (whole batch)",
                     "isolation": "each runtime's rows in a process of their own, interleaved among themselves; "
                                  "the runtimes one after the other",
                     "isa_limit": f"{PROXY_ENV}={PROXY_ISA}" if proxy else None},
        "load_average_1min": {"before": load_before, "after": _loadavg()},
        "rows": ordered, "results": results, "notes": notes, "isolation_check": checks,
    }
    if proxy:
        report["convolution_kernels"] = kernels
    report["bars"] = bars(report)
    report["eager_ratios"] = eager_ratios(report)
    return report

