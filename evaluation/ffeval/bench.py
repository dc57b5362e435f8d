"""ffbench's measurement: per-stage latency of the ffrt pipeline, per batch size.

Stages, each timed with ``time.perf_counter`` around the Detector's own stages
(``Detector.stages``, ``ffrt.stages``: the code every Detector call runs); the model is
loaded once, by that Detector:

- ``preprocess``:  ``stages.prepare`` on decoded frames held in memory (validate, resize to
                   the model size, colour order). File decoding is not included: on a line,
                   frames come from the camera.
- ``inference``:   ``stages.run(uint8 NHWC batch)``: the backend, its outputs checked.
                   A backend that measures its host-to-device, compute and device-to-host
                   parts (attribute ``last_stage_ms``, a dict with ``h2d``/``compute``/``d2h``
                   after each run) gets those stages too; they are absent otherwise (no
                   backend of this release measures them; CPU backends have no copies).
- ``postprocess``: ``stages.finish`` of each image: its map back onto its frame, pixel
                   threshold -> mask, image threshold, defect regions.
- ``total``:       the three together, timed as one call per iteration.

``detector_end_to_end`` times ``ffrt.Detector.predict_batch`` on the same frames, as a
check that the stage split adds up to what a user of the Detector sees.

The iterations are rounds of ``ffcore.timing.interleaved``, the latency harness every tool
shares: the pipeline, PyTorch (``--vs-torch``) and the Detector each run once per round.
Between runs of different engines the loop pauses ``settle_ms`` (untimed): ONNX Runtime
and OpenMP worker threads spin-wait after a run, and without the pause each engine is
timed against the previous one's spinning threads (the size of that effect:
benchmarks/README.md).

Achieved GFLOP/s (2 x MACs x batch / inference p50) are held to this machine's *measured* peak
of the precision that ran (ffeval.peaks, measured once per machine and cached), with the
nominal formula (ffeval.machine) beside it in the report.

``--vs-torch`` times the PyTorch eager model of the same checkpoint on the same uint8
batch (``to_tensor_batch`` + ``model(x)`` under ``torch.inference_mode``), interleaved
iteration by iteration with the ONNX Runtime inference, so both see the same machine state.
The eager model runs in a child process owned by the trainer (``python -m fftrain.eager``,
see ffeval.vs_torch): ffeval never imports torch or fftrain.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from ffcore.files import sha256_file
from ffcore.timing import interleaved

from .errors import BenchError  # noqa: F401  (ffeval.bench.BenchError stays importable)

SCHEMA = "ffeval.bench"
#: benchmarks/README.md "JSON schemas" says what each version holds.
SCHEMA_VERSION = 3
DEFAULT_BATCHES = (1, 2, 4, 8, 16)


# --- small helpers ---------------------------------------------------------------------


def summarize(ms: list[float] | np.ndarray, batch: int) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    mean = float(a.mean())
    return {
        "n": int(a.size), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
        "max_ms": float(a.max()), "mean_ms": mean,
        "images_per_s": batch * 1000.0 / mean if mean > 0 else None,
    }


def compute_rate(macs_per_image: int, batch: int, p50_ms: float, peak_gflops: float | None) -> tuple[float | None, float | None]:
    """(achieved GFLOP/s, fraction of the peak): 2 FLOP per MAC, the whole batch in ``p50_ms``."""
    if p50_ms <= 0:
        return None, None
    gflops = 2.0 * macs_per_image * batch / (p50_ms / 1e3) / 1e9
    return gflops, (gflops / peak_gflops if peak_gflops else None)


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def load_frames(spec: str | None, count: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """Frames to benchmark on: decoded images (BGR / gray, original size) and a description.

    ``spec``: a folder of images, ``elpv:mono`` / ``elpv:poly`` (test cells of the demo
    split), or None: the ELPV mono test cells when installed, else random 300x300 frames.
    """
    from ffrt.preprocess import read_image_file

    if spec is None:
        try:
            frames, what = load_frames("elpv:mono", count, seed)
            return frames, what + " (default)"
        except BenchError:
            rng = np.random.default_rng(seed)
            frames = [rng.integers(0, 256, (300, 300, 3), dtype=np.uint8) for _ in range(count)]
            return frames, f"{count} random uint8 300x300x3 frames, seed {seed} (ELPV not installed)"
    if spec.startswith("elpv:"):
        from ffcore.data import DataError, elpv

        try:
            split = elpv(spec.split(":", 1)[1])
        except DataError as e:
            raise BenchError(str(e)) from e
        paths = [s.path for s in split.test[:count]]
        what = f"{len(paths)} ELPV {spec} test cells (300x300 gray PNG)"
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise BenchError(f"--images {spec}: no such folder (give a folder of images or elpv:mono)")
        from ffcore.files import IMAGE_SUFFIXES

        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "ground_truth" not in p.parts)[:count]
        what = f"{len(paths)} images from {folder}"
    if not paths:
        raise BenchError(f"--images {spec}: no images found")
    frames = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]
    frames = [f if f is not None else read_image_file(p) for f, p in zip(frames, paths)]
    return frames, what


# --- the benchmark ---------------------------------------------------------------------


def run_benchmark(
    model_path: str | Path,
    backend: str = "auto",
    batches: tuple[int, ...] = DEFAULT_BATCHES,
    iters: int = 30,
    warmup: int = 3,
    threads: int | None = None,
    images: str | None = None,
    vs_torch: str | Path | None = None,
    fma_units: int | None = None,
    settle_ms: float = 50.0,
    progress: Callable[[str], None] = lambda s: None,
    command: list[str] | None = None,
) -> dict:
    """Measure and return the report dict (schema ``ffeval.bench`` v3, see benchmarks/README.md)."""
    from ffrt import Detector, FFRTError
    from ffrt.metafile import read_onnx_meta

    from .machine import describe
    from .macs import MacCountError, count_macs

    if iters < 1 or warmup < 0:
        raise BenchError(f"--iters must be >= 1 and --warmup >= 0 (got {iters}, {warmup})")
    if not batches or any(b < 1 for b in batches):
        raise BenchError(f"batch sizes must be positive integers (got {list(batches)})")
    path = Path(model_path)
    if not path.is_file():
        raise BenchError(f"{path}: no such model file")
    if path.suffix.lower() != ".onnx":
        raise BenchError(f"{path}: ffbench measures an .onnx model exported by ffexport")
    try:
        meta = read_onnx_meta(path)
    except FFRTError as e:
        raise BenchError(str(e).splitlines()[0]) from e
    if meta.batch_max is not None and max(batches) > meta.batch_max:
        raise BenchError(
            f"batch {max(batches)} exceeds this model's batch_max {meta.batch_max}; "
            f"use --batch sizes <= {meta.batch_max} or re-export with --batch-max"
        )

    progress("describing the machine and counting MACs")
    machine = describe(fma_units)
    try:
        macs = count_macs(path)
    except MacCountError as e:
        raise BenchError(str(e)) from e

    try:
        detector = Detector(path, backend=backend, threads=threads)
    except FFRTError as e:
        raise BenchError(str(e).splitlines()[0]) from e
    be, selection = detector.stages.backend, detector.backend_selection
    progress(f"backend {be.description}")
    add_measured_peaks(machine, progress if is_cpu_backend(be) else None)

    eager = _start_eager(vs_torch, meta, threads or getattr(be, "threads", None)) if vs_torch is not None else None
    try:
        results, frames_what, load_before = _measure(
            batches, iters, warmup, images, settle_ms, progress, meta, be, detector, eager, machine, macs)
    finally:
        if eager is not None:
            eager.close()
    spec = meta.input
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else list(sys.argv),
        "model": {
            "path": str(path),
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "precision": meta.precision,
            "target": meta.target,
            "input": {"height": spec.height, "width": spec.width, "layout": "NHWC uint8 RGB"},
            "backbone": meta.backbone.name,
            "backbone_pretrained": meta.backbone.pretrained,
            "flow_steps": meta.flow.steps,
            "batch_max": meta.batch_max,
            "opset": meta.opset,
        },
        "backend": {
            "name": be.name,
            "description": be.description,
            "providers": list(be.providers),
            "threads": getattr(be, "threads", None),
            "auto_skipped": list(selection),
        },
        "machine": machine,
        "macs": macs.to_dict(),
        "settings": {
            "batches": list(batches), "iters": iters, "warmup": warmup, "threads": threads,
            "images": frames_what, "torch_checkpoint": str(vs_torch) if vs_torch else None,
            "torch": eager.info if eager is not None else None,
            "timer": "time.perf_counter, one sample per iteration; latency = per call (whole batch)",
            "settle_ms": settle_ms,
        },
        "load_average_1min": {"before": load_before, "after": _loadavg(),
                              "note": "other processes competing for the CPU inflate every figure; "
                                      "a 1-min load above the core count means the run was not alone"},
        "results": results,
    }


def is_cpu_backend(be) -> bool:
    from ffrt.backends.kinds import BackendKind, backend_kind

    return backend_kind(be.name) is BackendKind.CPU


def add_measured_peaks(machine: dict, progress: Callable[[str], None] | None) -> None:
    """Put this machine's measured peak per precision (ffeval.peaks, cached per machine) beside
    the nominal one in ``machine["cpu_peak"]``: ``measured`` (how and when) and
    ``by_precision``. ``progress=None`` (a GPU backend: no CPU figure to hold) leaves both null."""
    from .peaks import measured_peaks, peaks_by_precision

    peak = machine.get("cpu_peak")
    if peak is None:
        return
    if progress is None:
        peak.update(measured=None, by_precision=None)
        return
    measured = measured_peaks(machine, progress=progress)
    peak.update(measured=measured, by_precision=peaks_by_precision(machine, measured))


def _measure(batches, iters, warmup, images, settle_ms, progress, meta, be, detector, eager, machine, macs):
    """The timed rounds of every batch size: (result rows, frames description, load before)."""
    from .peaks import peak_used

    run_stage = detector.stages
    frames, frames_what = load_frames(images, max(batches))
    load_before = _loadavg()
    thr = detector.thresholds
    by_precision = (machine.get("cpu_peak") or {}).get("by_precision")
    used, peak_gops = peak_used(by_precision, be.precision) if by_precision else (None, None)
    results = []
    for batch in batches:
        chunk = [frames[i % len(frames)] for i in range(batch)]
        progress(f"batch {batch}: {warmup} warm-up + {iters} timed iterations")
        pre, inf, post = [], [], []
        gpu_parts: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": []}

        def pipeline(record: bool = True) -> None:
            # The Detector's own stages (ffrt.stages), each timed.
            t0 = time.perf_counter()
            prepared = run_stage.prepare(chunk)
            t1 = time.perf_counter()
            maps, scores = run_stage.run(prepared.batch)
            t2 = time.perf_counter()
            for i, geometry in enumerate(prepared.geometries):
                run_stage.finish(maps[i, 0], scores[i], geometry, thr)
            t3 = time.perf_counter()
            if record:
                pre.append((t1 - t0) * 1e3)
                inf.append((t2 - t1) * 1e3)
                post.append((t3 - t2) * 1e3)
                parts = getattr(be, "last_stage_ms", None)
                if isinstance(parts, dict):
                    for k in gpu_parts:
                        if k in parts:
                            gpu_parts[k].append(float(parts[k]))

        # Interleaved rounds (ffcore.timing): the pipeline, PyTorch on the same uint8 batch
        # (with --vs-torch), the Detector end to end; each followed by the settle pause.
        ready = run_stage.prepare(chunk).batch
        runners = {"total": pipeline}
        torch_ms: list[float] = []
        if eager is not None:
            eager.load(ready)  # the same uint8 batch; the child times its own calls
            runners["torch"] = lambda: torch_ms.append(eager.run())
        runners["detector"] = lambda: detector.predict_batch(chunk, batch_size=batch)
        for _ in range(warmup):
            pipeline(record=False)
            for name, fn in runners.items():
                if name != "total":
                    fn()
        rss_reset = _reset_peak_rss()
        timed = interleaved(runners, rounds=iters, warmup=0, settle_s=settle_ms / 1e3)
        total, e2e = timed["total"], timed["detector"]
        torch_ms = torch_ms[-iters:]  # the rounds' calls, not the warm-up's
        inference = summarize(inf, batch)
        gflops, fraction = compute_rate(macs.total, batch, inference["p50_ms"], peak_gops)
        stages = {"preprocess": summarize(pre, batch), "inference": inference}
        stages.update({k: summarize(v, batch) for k, v in gpu_parts.items() if v})
        stages.update({"postprocess": summarize(post, batch), "total": summarize(total, batch)})
        row = {
            "batch": batch,
            "stages": stages,
            "detector_end_to_end": summarize(e2e, batch),
            "throughput_images_per_s": {
                "inference": inference["images_per_s"],
                "pipeline": summarize(total, batch)["images_per_s"],
            },
            "achieved_gflops": gflops,
            "fraction_of_cpu_peak": fraction,
            "peak_used": used if peak_gops else None,
            "peak_rss_mb": _peak_rss_mb(),
            "peak_rss_scope": "this batch size" if rss_reset else "process lifetime",
            "torch_eager": None,
        }
        if eager is not None:
            t = summarize(torch_ms, batch)
            row["torch_eager"] = {"inference": t, "ratio_p50": t["p50_ms"] / inference["p50_ms"]}
        results.append(row)
        progress(_row_line(row))
    return results, frames_what, load_before


def _start_eager(ckpt, meta, threads):
    from .vs_torch import EagerChild

    eager = EagerChild(ckpt, threads)
    if eager.image_size != (meta.input.height, meta.input.width):
        eager.close()
        h, w = eager.image_size
        raise BenchError(
            f"--vs-torch {ckpt}: the checkpoint's input is {h}x{w} but the ONNX model's is "
            f"{meta.input.height}x{meta.input.width}; give the checkpoint the model was exported from"
        )
    return eager


def _row_line(row: dict) -> str:
    s = row["stages"]
    line = (f"batch {row['batch']:>3}: pre {s['preprocess']['p50_ms']:.2f} | infer {s['inference']['p50_ms']:.2f} "
            f"(p99 {s['inference']['p99_ms']:.2f}) | post {s['postprocess']['p50_ms']:.2f} | total "
            f"{s['total']['p50_ms']:.2f} ms p50 | {row['throughput_images_per_s']['pipeline']:.1f} img/s")
    if row["achieved_gflops"]:
        line += f" | {row['achieved_gflops']:.1f} GFLOP/s"
        if row["fraction_of_cpu_peak"] is not None:
            line += f" ({100 * row['fraction_of_cpu_peak']:.1f}% of the measured {row['peak_used']} peak)"
    if row["torch_eager"]:
        line += f" | torch eager {row['torch_eager']['inference']['p50_ms']:.2f} ms = {row['torch_eager']['ratio_p50']:.2f}x"
    return line


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BenchError(f"--batch {text!r}: give comma-separated positive integers, e.g. 1,8") from None
    if not values or any(v < 1 for v in values):
        raise BenchError(f"--batch {text!r}: give comma-separated positive integers, e.g. 1,8")
    return values


def _loadavg() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None
