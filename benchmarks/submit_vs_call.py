"""Dynamic batching (Detector.submit) against direct calls (Detector.__call__), 1/4/8 cameras.

    python benchmarks/submit_vs_call.py --model runs/demo/model.onnx [--cameras 1,4,8]
        [--seconds 4] [--rounds 3] [--max-batch 8] [--max-delay-ms 2] [--threads 2] [--json FILE]

Each camera is a thread that sends real ELPV cells (300x300, decoded once; the demo extra)
one frame at a time and waits for its verdict before the next, as a camera whose trigger
waits for the reject gate does (closed loop: one frame in flight per camera). Two ways of
serving the same cameras from one Detector:

- call:   every camera thread calls ``det(frame)`` itself (ONNX Runtime sessions run
          concurrently; this is what line software did before ``submit``);
- submit: every camera thread calls ``det.submit(frame, source=cam).result()``; the
          batching worker gathers frames of all cameras into one backend call.

Per (mode, cameras): frames per second over the whole measurement and the p50/p99 latency
of a frame (submit to verdict). Modes and camera counts are interleaved round by round in
one process, so the ratios compare like with like; absolute figures depend on the machine,
which is printed and saved with them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from closedloop import closed_loop, elpv_cells

ROOT = Path(__file__).resolve().parents[1]


def run_cameras(det, mode: str, cameras: int, cells: list[np.ndarray], seconds: float) -> dict:
    """Closed-loop cameras for ``seconds``; returns frames, wall time and frame latencies (ms)."""

    def open_camera(k: int):
        if mode == "call":
            return (lambda frame: frame), det, (lambda: None)
        return (lambda frame: frame), (lambda frame: det.submit(frame, source=f"cam{k}").result()), (lambda: None)

    run = closed_loop(cameras, seconds, cells, open_camera)
    if run["errors"]:
        err = run["first_error"]
        raise RuntimeError(f"{mode} with {cameras} cameras failed: {err!r}") from err
    return {"frames": run["requests"], "wall_s": run["wall_s"], "latencies_ms": np.asarray(run["latencies_s"]) * 1e3}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "runs" / "demo" / "model.onnx")
    p.add_argument("--backend", default="onnxruntime-cpu")
    p.add_argument("--cameras", default="1,4,8", help="comma-separated camera counts (default 1,4,8)")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per (mode, cameras, round)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    p.add_argument("--json", type=Path, help="save the figures and the machine here")
    a = p.parse_args(argv)
    if not a.model.is_file():
        p.error(f"{a.model}: no such model; run 'make demo' first or pass --model")
    counts = [int(c) for c in a.cameras.split(",")]
    if a.rounds < 1 or a.seconds <= 0 or min(counts) < 1:
        p.error("--rounds, --seconds and every camera count must be positive")

    from ffeval.machine import describe, one_line
    from ffrt import Detector

    machine = describe()
    print(f"machine: {one_line(machine)}")
    cells = elpv_cells(64)
    det = Detector(a.model, backend=a.backend, threads=a.threads, max_batch=a.max_batch, max_delay_ms=a.max_delay_ms)
    print(f"model {a.model} on {det.backend_description}; submit: max_batch {a.max_batch}, max_delay_ms {a.max_delay_ms}")
    for mode in ("call", "submit"):  # warm-up: arenas for every batch size the batcher may form
        run_cameras(det, mode, max(counts), cells, 1.0)

    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(a.rounds):
        for n in counts:
            for mode in ("call", "submit") if r % 2 == 0 else ("submit", "call"):
                runs.setdefault((mode, n), []).append(run_cameras(det, mode, n, cells, a.seconds))
        print(f"round {r + 1}/{a.rounds} done", flush=True)
    batches = det.pipeline_stats().mean_batch_size
    det.close()

    rows = []
    for n in counts:
        row = {"cameras": n}
        for mode in ("call", "submit"):
            rs = runs[(mode, n)]
            lat = np.concatenate([x["latencies_ms"] for x in rs])
            row[mode] = {
                "fps": sum(x["frames"] for x in rs) / sum(x["wall_s"] for x in rs),
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
                "frames": int(lat.size),
            }
        row["throughput_ratio"] = row["submit"]["fps"] / row["call"]["fps"]
        rows.append(row)

    print(f"\n| cameras | call img/s | call p50 / p99 ms | submit img/s | submit p50 / p99 ms | submit / call |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        c, s = row["call"], row["submit"]
        print(f"| {row['cameras']} | {c['fps']:.1f} | {c['p50_ms']:.1f} / {c['p99_ms']:.1f} | {s['fps']:.1f} | "
              f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} | {row['throughput_ratio']:.2f}x |")
    print(f"mean batch formed by submit over the whole run: {batches:.2f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "schema": "ffrt.submit_vs_call v1", "machine": machine, "model": str(a.model), "backend": det.backend_description,
            "settings": {k: v for k, v in vars(a).items() if k not in ("model", "json")}, "rows": rows,
            "mean_batch_submit": batches,
        }, indent=2, default=str))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
