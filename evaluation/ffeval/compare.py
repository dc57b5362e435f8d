"""``ffbench MODEL --backend all``: every backend and precision that runs here, in one run.

Each configuration (a backend, and on OpenVINO each float precision this CPU computes
natively) is built once; then, per batch size, every configuration runs the same uint8
batch once per round (ffcore.timing.interleaved, with the settle pause after every call), so
the ratios are taken under the same machine state. Model-only: ``backend.run`` (ffbench's
"inference" stage). Achieved GFLOP/s = 2 x MACs x batch / p50, against this machine's measured
peak of the float precision the configuration computes in (ffeval.peaks, with the nominal
formula beside it; an INT8 file's convolutions are only part of its MACs, so it is held to the
peak of its float part).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ffcore.timing import interleaved

SCHEMA = "ffeval.bench-all"
SCHEMA_VERSION = 2


def configurations(availability: dict[str, str | None], precision_problem) -> tuple[list[tuple], list[str]]:
    """([(label, backend, precision)], [why a backend or precision is left out])."""
    rows, left_out = [], []
    for name, why in availability.items():
        if why is not None:
            left_out.append(f"{name}: {why}")
            continue
        for precision in ("fp32", "bf16"):
            problem = precision_problem(name, precision)
            if problem is None:
                rows.append((f"{name} {precision}", name, precision))
            elif precision == "bf16" and name == "openvino":
                left_out.append(f"{name} bf16: {problem}")
    return rows, left_out


def run_comparison(model_path: str | Path, batches: tuple[int, ...], iters: int, warmup: int, threads: int | None,
                   settle_ms: float, fma_units: int | None = None, progress=lambda s: None,
                   command: list[str] | None = None) -> dict:
    from ffrt.backends import availability, create_backend
    from ffrt.backends.base import precision_problem
    from ffrt.metafile import read_onnx_meta

    from .bench import BenchError, is_cpu_backend, add_measured_peaks, compute_rate, summarize
    from .machine import describe
    from .macs import count_macs
    from .peaks import peak_used

    path = Path(model_path)
    meta = read_onnx_meta(path)
    machine = describe(fma_units)
    macs = count_macs(path)
    rows, left_out = configurations(availability(), precision_problem)
    backends = {}
    for label, name, precision in rows:
        try:
            be, _ = create_backend(name, path, meta, threads, precision=precision)
        except Exception as e:  # noqa: BLE001 - a backend that fails to start is reported, the rest compared
            left_out.append(f"{label}: {' '.join(str(e).split())[:300]}")
            continue
        backends[f"{name} {be.precision}"] = be  # named by what ran (an INT8 file: "int8", "int8+bf16")
    if not backends:
        raise BenchError("no backend could run this model here: " + "; ".join(left_out))
    for label, be in backends.items():
        progress(f"{label}: {be.description}")
    add_measured_peaks(machine, progress if any(is_cpu_backend(be) for be in backends.values()) else None)
    by_precision = (machine.get("cpu_peak") or {}).get("by_precision")
    rng = np.random.default_rng(0)
    results = []
    for n in batches:
        x = rng.integers(0, 256, size=(n, meta.input.height, meta.input.width, 3), dtype=np.uint8)
        progress(f"batch {n}: {warmup} warm-up + {iters} interleaved rounds of {len(backends)} configurations")
        # An untimed call at the start of each turn takes the previous runtime's spinning threads.
        timed = interleaved({label: (lambda b=be: b.run(x)) for label, be in backends.items()}, rounds=iters,
                            warmup=max(1, warmup), settle_s=settle_ms / 1e3, rewarm=1)
        first = next(iter(timed))
        row = {"batch": n, "configurations": {}}
        for label, ms in timed.items():
            be = backends[label]
            s = summarize(ms, n)
            part, peak = peak_used(by_precision, be.precision) if by_precision and is_cpu_backend(be) else (None, None)
            gflops, fraction = compute_rate(macs.total, n, s["p50_ms"], peak)
            row["configurations"][label] = {
                "inference": s, "precision": be.precision,
                "speedup_vs_first": float(np.median(timed[first]) / np.median(ms)), "achieved_gflops": gflops,
                "fraction_of_precision_peak": fraction, "peak_used": part if peak else None,
            }
        results.append(row)
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else list(sys.argv),
        "model": {"path": str(path), "precision": meta.precision, "target": meta.target,
                  "input": {"height": meta.input.height, "width": meta.input.width},
                  "gmac_per_image": macs.total / 1e9},
        "configurations": {label: {"backend": be.name, "description": be.description, "precision": be.precision,
                                   "precision_detail": be.precision_detail} for label, be in backends.items()},
        "left_out": left_out,
        "machine": machine,
        "settings": {"batches": list(batches), "iters": iters, "warmup": warmup, "threads": threads,
                     "settle_ms": settle_ms, "timer": "model-only backend.run, interleaved rounds"},
        "results": results,
    }


def format_comparison(r: dict) -> str:
    from .machine import one_line

    lines = [f"model    {r['model']['path']}: {r['model']['input']['height']}x{r['model']['input']['width']}, "
             f"{r['model']['precision']}, {r['model']['gmac_per_image']:.3f} GMAC/image",
             f"machine  {one_line(r['machine'])}"]
    peak = r["machine"].get("cpu_peak") or {}
    if peak.get("by_precision"):
        from .peaks import peak_lines

        lines += peak_lines(peak["by_precision"], peak["measured"])
    lines += [f"left out {why}" for why in r["left_out"]]
    lines.append("")
    for row in r["results"]:
        lines.append(f"batch {row['batch']}:  {'configuration':<26} {'p50 ms':>8} {'p99 ms':>8} {'img/s':>8} {'x first':>8} "
                     f"{'GFLOP/s':>8} {'% peak':>7}")
        for label, c in row["configurations"].items():
            s, frac = c["inference"], c["fraction_of_precision_peak"]
            lines.append(f"          {label:<26} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} {s['images_per_s']:8.1f} "
                         f"{c['speedup_vs_first']:7.2f}x {c['achieved_gflops'] or 0:8.1f} "
                         f"{(f'{100 * frac:6.1f}%') if frac is not None else '    n/a'}"
                         + (f" of {c['peak_used']}" if c["peak_used"] else ""))
        lines.append("")
    lines.append("model-only (backend.run), interleaved rounds; img/s = batch / mean; x first = p50 of the first row / p50; "
                 "% peak = 2 x MACs x batch / p50 against the measured peak of the precision it computed in")
    return "\n".join(lines)
