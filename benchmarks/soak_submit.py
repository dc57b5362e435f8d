"""Soak of Detector.submit: many submissions from simulated cameras; memory flat, nothing lost.

    python benchmarks/soak_submit.py [--model model.onnx] [--submissions 10000] [--cameras 4]
        [--max-batch 8] [--max-delay-ms 2] [--queue-size 64] [--policy block] [--json FILE]

Without --model the test suite's tiny FastFlow (64x64, EfficientNet-Lite0, 2 flow steps)
is trained on 48 real ELPV cells and exported first (needs the train and demo extras).

Each camera is a thread that submits real ELPV cells (300x300, decoded once) as fresh
copies, as a camera hands over a new buffer per frame, as fast as the Detector accepts
them (queue policy "block": back-pressure, nothing dropped). Checks, each printed:

- every future resolved: one Result per submission, no exception, none cancelled;
- none lost, duplicated or delivered to the wrong future: every result's score equals the
  direct-call score of the cell submitted (the cells are chosen so that no two score within
  0.1 % of each other), and each camera's done-callbacks arrive exactly once per frame, in
  submission order;
- memory flat: the resident set size (RSS), sampled every 1,000 submissions, grows by at
  most RSS_BOUND_MB from the sample at 2,000 (after warm-up: ONNX Runtime's arenas have
  seen every batch size) to the last. 16 MB over 8,000 submissions is 2 KB per
  submission: one leaked frame copy (270 KB) or Result (a 360 KB map) per ~60 submissions
  would exceed it;
- no ffrt thread left after close().

Exit status 0 when every check passes. Figures are printed with the machine and saved as
JSON (--json); speed figures here are a by-product, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

RSS_BOUND_MB = 16.0
SAMPLE_EVERY = 1000
TOL = 1e-4  # relative: batch composition changes a score by ~1e-6


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_tiny_model(folder: Path) -> Path:
    """The tests' tiny model (tests/conftest.py): trained on 48 real ELPV cells, exported."""
    from ffexport.cli import main as export
    from fftrain.config import ModelConfig
    from fftrain.data import elpv
    from fftrain.train import TrainSettings, train_and_save

    split = elpv("mono")
    split.train, split.val = split.train[:48], split.val[:12]
    ckpt = folder / "model.pt"
    config = ModelConfig(image_size=64, flow_steps=2, hidden_ratio=1.0)
    train_and_save(config, split, TrainSettings(epochs=2, batch_size=16, progress=False), ckpt, log=lambda _: None)
    assert export(["--no-bf16", "--ckpt", str(ckpt), "--out", str(folder / "export"), "--batch-max", "8"]) == 0
    return folder / "export" / "model.onnx"


def pick_cells(det, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Real ELPV cells whose direct-call scores are pairwise more than 0.1 % apart."""
    from ffcore.data import elpv

    images, scores = [], []
    for sample in elpv("mono").test:
        image = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
        s = det(image).score
        if all(abs(s - t) > 1e-3 * max(abs(s), abs(t)) for t in scores):
            images.append(image)
            scores.append(s)
        if len(images) == count:
            break
    return images, np.array(scores)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="an exported .onnx (default: build the tests' tiny model)")
    p.add_argument("--submissions", type=int, default=10_000)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--cells", type=int, default=64, help="distinct real cells the cameras cycle through")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--queue-size", type=int, default=64)
    p.add_argument("--policy", default="block", choices=("block",), help="only 'block' guarantees no drops")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from ffeval.machine import describe, one_line
    from ffrt import Detector

    machine = describe()
    print(f"machine: {one_line(machine)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_model(Path(tmp))
        det = Detector(model, backend="onnxruntime-cpu", threads=args.threads, max_batch=args.max_batch,
                       max_delay_ms=args.max_delay_ms, queue_size=args.queue_size, queue_policy=args.policy)
        model_desc = (f"{det.meta.backbone.name} {det.meta.input.height}x{det.meta.input.width}, "
                      f"{det.meta.flow.steps} flow steps, {det.meta.precision}" + ("" if args.model else " (tests' tiny model)"))
        print(f"model: {model_desc}; {det.backend_description}", flush=True)
        cells, expected = pick_cells(det, args.cells)
        threads_before = set(threading.enumerate())
        report = soak(det, cells, expected, args)
        det.close()
        left = sorted(t.name for t in set(threading.enumerate()) - threads_before if t.name.startswith("ffrt-"))
    report["checks"]["no_thread_left"] = not left
    report.update(machine=machine, model=model_desc, settings=vars(args) | {"model": str(args.model) if args.model else None})
    ok = all(report["checks"].values())
    print(f"\nthreads left after close: {left or 'none'}")
    print("checks: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in report["checks"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok else 1


def soak(det, cells: list[np.ndarray], expected: np.ndarray, args) -> dict:
    n, k = args.submissions, args.cameras
    per_camera = [n // k + (1 if c < n % k else 0) for c in range(k)]
    lock = threading.Lock()
    submitted = [0]
    samples: list[dict] = []
    arrivals = [[] for _ in range(k)]  # per camera: frame numbers in done-callback order
    outcome = {"results": 0, "exceptions": 0, "cancelled": 0, "wrong_scores": 0}
    # Futures not resolved yet. Resolved ones are let go, as line software does: holding
    # every Result (a 300x300 float map each) would measure the harness, not the Detector.
    pending: dict[tuple[int, int], object] = {}
    t0 = time.perf_counter()

    def on_done(fut, cam: int, frame: int, cell: int) -> None:
        if fut.cancelled():
            what = "cancelled"
        elif fut.exception() is not None:
            what = "exceptions"
        else:
            what = "results"
            if abs(fut.result().score - expected[cell]) > TOL * abs(expected[cell]):
                what = "wrong_scores"
        with lock:
            outcome[what] += 1
            arrivals[cam].append(frame)
            del pending[cam, frame]

    def camera(cam: int) -> None:
        for frame in range(per_camera[cam]):
            cell = (cam * 17 + frame) % len(cells)
            fut = det.submit(cells[cell].copy(), source=f"cam{cam}")  # a fresh buffer per frame
            with lock:  # registered before the callback, which removes it
                pending[cam, frame] = fut
            fut.add_done_callback(lambda f, c=cam, i=frame, j=cell: on_done(f, c, i, j))
            with lock:
                submitted[0] += 1
                if submitted[0] % SAMPLE_EVERY == 0:
                    stats = det.pipeline_stats()
                    samples.append({
                        "submitted": submitted[0], "rss_mb": round(rss_mb(), 1),
                        "elapsed_s": round(time.perf_counter() - t0, 2), "completed": stats.completed,
                        "queue_depth": stats.queue_depth,
                    })
                    print(f"  {submitted[0]:>6} submitted  RSS {samples[-1]['rss_mb']:7.1f} MB  "
                          f"{samples[-1]['elapsed_s']:7.2f} s  completed {stats.completed:>6}  "
                          f"queue {stats.queue_depth:>3}", flush=True)

    print(f"soak: {n} submissions from {k} camera threads, {len(cells)} distinct real ELPV cells (300x300)", flush=True)
    rss_start = rss_mb()
    threads = [threading.Thread(target=camera, args=(c,), name=f"camera{c}") for c in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    unresolved = len(pending)
    results, failed, cancelled = outcome["results"], outcome["exceptions"], outcome["cancelled"]
    in_order = all(arrivals[c] == list(range(per_camera[c])) for c in range(k))
    stats = det.pipeline_stats()

    base = next(s for s in samples if s["submitted"] == 2 * SAMPLE_EVERY) if n >= 2 * SAMPLE_EVERY else samples[0]
    rss = [s["rss_mb"] for s in samples]
    growth = rss[-1] - base["rss_mb"]
    print(f"\nRSS: start {rss_start:.1f} MB, first sample {rss[0]:.1f}, at 2,000 {base['rss_mb']:.1f}, "
          f"last {rss[-1]:.1f}, max {max(rss):.1f} MB; growth from 2,000 to the end {growth:+.1f} MB "
          f"(bound {RSS_BOUND_MB:g} MB)")
    print(f"futures: {n} submitted, {results} results, {failed} exceptions, {cancelled} cancelled, "
          f"{unresolved} unresolved; wrong score {outcome['wrong_scores']}; callbacks {sum(map(len, arrivals))}, "
          f"per camera in submission order: {in_order}")
    print(f"throughput {n / elapsed:.1f} images/s over {elapsed:.1f} s; mean batch {stats.mean_batch_size:.2f}; "
          f"latency p50 {stats.latency.p50_ms:.1f} ms, p99 {stats.latency.p99_ms:.1f} ms "
          f"(queue p50 {stats.queue.p50_ms:.1f}, inference p50 {stats.inference.p50_ms:.1f} ms)")
    checks = {
        "every_future_resolved": unresolved == 0 and results + outcome["wrong_scores"] == n and failed == 0
        and cancelled == 0,
        "none_lost_or_duplicated": outcome["wrong_scores"] == 0 and in_order and sum(map(len, arrivals)) == n
        and stats.completed == n and stats.submitted == n,
        "rss_flat": growth <= RSS_BOUND_MB,
    }
    return {
        "submissions": n, "cameras": k, "elapsed_s": elapsed, "throughput_fps": n / elapsed,
        **outcome, "unresolved": unresolved,
        "callbacks_in_order": in_order,
        "rss_mb": {"start": rss_start, "first_sample": rss[0], "at_2000": base["rss_mb"], "last": rss[-1], "max": max(rss),
                   "growth_from_2000": growth, "bound": RSS_BOUND_MB},
        "samples": samples, "pipeline_stats": stats.to_dict(), "checks": checks,
    }


if __name__ == "__main__":
    sys.exit(main())
