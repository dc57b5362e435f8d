"""Line throughput: frames per second end to end, beside the model-only rate at the same batch.

    python benchmarks/line_throughput.py --model runs/demo/model.onnx [--sizes 1,2,5] [--sources 1,4]
        [--frames 48] [--batch 8] [--videos] [--baseline-tree DIR] [--json benchmarks/results/line-throughput.json]

What is timed, on recorded camera-like streams (benchmarks/line_streams.py: real ELPV cells and
DeepPCB boards upscaled to 1, 2 or 5 megapixels, JPEG folders or MJPEG videos):

- ``ffrt run`` as a user runs it (``python -m ffrt run MODEL SOURCE... --max-batch N``, a process
  of its own), frames/s over the frames after the first third of the run (:func:`steady_fps`;
  the whole run's figure from summary.json is kept beside it). Each JPEG stream set runs as
  ``default`` (no options: the decoding threads, JPEG frames decoded at a reduced resolution,
  maps at frame size only for flagged frames) and ``whole decode`` (``--no-reduced-decode``);
  with ``--baseline-tree DIR`` (a checkout of another commit, e.g. ``git worktree add DIR
  HEAD~3``) also as that checkout's ``ffrt run`` with its own defaults, ``baseline``, in the
  same minutes;
- ``Detector.submit`` from several camera threads in one process, each thread decoding its
  own JPEG files whole (``cv2.imdecode``) and submitting them, as an integrator's code does;
- the model alone at the same batch (ffbench's "inference" stage, ``backend.run`` on a uint8
  batch at the model size) in a process of its own (ffeval.modelonly), timed right before and
  right after each row (the machine may be shared: each row is compared with the model's rate
  of the same minutes).

Ratio = end-to-end frames/s / model-only images/s. Prints a table and writes JSON and
markdown (the machine, the load average, every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import line_streams  # noqa: E402

ROOT = HERE.parent
#: ffrt run's options per setting (the baseline: another checkout's ffrt run, its defaults).
SETTINGS = {
    "baseline": [],
    "whole decode": ["--no-reduced-decode"],
    "default": [],
}


def _describe_tree(tree: Path | None) -> str | None:
    """The checkout and its commit, for the report."""
    if tree is None:
        return None
    done = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return f"{tree} ({done.stdout.strip() or 'not a git checkout'})"


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class ModelOnly:
    """The model alone at the benchmark's batch, in a child process of its own (ffeval.modelonly),
    timed right before and right after each end-to-end row, so that each row's ratio is taken
    against the model's rate of the same minutes (the machine may be shared)."""

    def __init__(self, model: Path, batch: int, rounds: int, threads: int | None, backend: str) -> None:
        from ffeval.modelonly import ModelOnlyChild
        from ffrt.metafile import read_onnx_meta

        spec = read_onnx_meta(model).input
        self.batch, self.rounds = batch, rounds
        self.child = ModelOnlyChild(model, backend, threads)
        self.child.load(np.random.default_rng(0).integers(0, 256, (batch, spec.height, spec.width, 3), dtype=np.uint8))
        for _ in range(2):
            self.child.run()

    def rate(self) -> tuple[float, float]:
        """(images per second at the p50 of ``rounds`` calls, CPU milliseconds per image: the
        median of the calls' CPU time over the batch)."""
        ms, cpu = [], []
        for _ in range(self.rounds):
            ms.append(self.child.run())
            cpu.append(self.child.last_cpu_ms)
        return self.batch * 1000.0 / float(np.median(ms)), float(np.median(cpu)) / self.batch

    def around(self, measure) -> tuple[dict, float, float]:
        """(what ``measure()`` returns, the model-only images/s and CPU ms per image: the means
        of one measurement taken before and one after)."""
        before = self.rate()
        row = measure()
        after = self.rate()
        return row, (before[0] + after[0]) / 2, (before[1] + after[1]) / 2


def ffrt_run(model: Path, sources: list[Path], batch: int, extra: list[str], threads: int | None,
             backend: str, tree: Path | None = None) -> dict:
    """One ``ffrt run`` in its own process (``tree``: the ffrt of that checkout, ahead of the
    installed one on the import path); its summary's totals and pipeline figures."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(str(tree / p) for p in ("runtime", "core"))
    with tempfile.TemporaryDirectory(prefix="line-throughput-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "ffrt", "run", str(model), *map(str, sources), "--out", str(out),
               "--max-batch", str(batch), "--backend", backend, *extra] + (["--threads", str(threads)] if threads else [])
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"ffrt run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    t, p = summary["totals"], summary["pipeline"]
    done = [datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() + r["latency_ms"] / 1e3
            for r in lines if r["status"] == "scored"]  # when each frame's result was ready
    return {"frames": t["scored"], "elapsed_s": t["elapsed_s"], "fps": steady_fps(done), "fps_whole_run": t["fps"],
            "cpu_ms_per_frame": t.get("cpu_ms_per_frame"),
            "fail": t["fail"],
            "mean_batch": p.get("mean_batch_size"), "decode": summary.get("decode"), "backend": summary.get("backend"),
            "stage_p50_ms": {k: p[k]["p50_ms"] for k in ("queue", "preprocess", "inference", "postprocess", "latency")
                             if isinstance(p.get(k), dict)},
            "command": "ffrt run MODEL " + " ".join(f"<{s.name}>" for s in sources) + f" --max-batch {batch} "
                       + " ".join(extra)}


def steady_fps(done: list[float], skip: float = 1 / 3) -> float:
    """Frames per second once the line runs: from the times results were ready, the frames
    ready after the first third's last one, over the time since it; the start (queues filling,
    first calls) is not in it. A batch's frames are ready at one instant, so the frames that
    share the first instant of the span are not counted: counting them overstated short runs
    by up to a batch."""
    done = sorted(done)
    t0 = done[int(len(done) * skip)]
    later = [t for t in done if t > t0]
    span = later[-1] - t0 if later else 0.0
    return len(later) / span if span > 0 else float("nan")


def detector_submit(model: Path, sources: list[Path], batch: int, threads: int | None, backend: str) -> dict:
    """Camera threads, one per source: each decodes its JPEG files whole and submits them to one
    Detector (warmed up at every batch size); frames/s as :func:`steady_fps`."""
    from ffrt import Detector
    from ffrt.line.cli import warm_up
    from ffrt.preprocess import read_image_file

    with Detector(model, backend=backend, threads=threads, max_batch=batch) as det:
        warm_up(det)
        futures: list = []
        lock = threading.Lock()

        done: list[float] = []

        def camera(folder: Path, name: str) -> None:
            for path in sorted(folder.glob("*.jpg")):
                fut = det.submit(read_image_file(path, det.limits, det.meta.input), source=name)
                fut.add_done_callback(lambda _: done.append(time.perf_counter()))
                with lock:
                    futures.append(fut)

        cams = [threading.Thread(target=camera, args=(s, f"cam{k}")) for k, s in enumerate(sources)]
        t0, cpu0 = time.perf_counter(), time.process_time()
        for c in cams:
            c.start()
        for c in cams:
            c.join()
        results = [f.result() for f in futures]
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"frames": len(results), "elapsed_s": elapsed, "fps": steady_fps(done), "fps_whole_run": len(results) / elapsed,
            "cpu_ms_per_frame": 1e3 * cpu / len(results),
            "fail": sum(r.is_anomalous for r in results)}


def run(args) -> dict:
    from ffeval.machine import describe

    model = args.model.resolve()
    work = args.work.resolve()
    report = {"schema": "ffrt.line-throughput", "schema_version": 1,
              "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/line_throughput.py " + " ".join(sys.argv[1:]),
              "machine": describe(), "model": str(args.model),
              "settings": {"batch": args.batch, "frames_per_source": args.frames, "threads": args.threads,
                           "backend": args.backend, "baseline_tree": _describe_tree(args.baseline_tree),
                           "streams": args.streams,
                           "jpeg_quality": line_streams.JPEG_QUALITY, "sizes": {mp: list(wh) for mp, wh in
                                                                                  line_streams.SIZES.items()}},
              "load_average_1min": {"before": _loadavg()}, "rows": []}
    print("model only, its own process ...", flush=True)
    ref = ModelOnly(model, args.batch, args.rounds, args.threads, args.backend)
    rate, cpu = ref.rate()
    report["model_only"] = {"backend": ref.child.backend, "batch": args.batch, "images_per_s": rate,
                            "cpu_ms_per_image": cpu}
    print(f"  {report['model_only']['images_per_s']:.1f} img/s at batch {args.batch} ({ref.child.backend})", flush=True)
    plan = [(mp, n, "jpeg") for mp in args.sizes for n in args.sources]
    plan += [(mp, n, "mjpeg") for mp in (args.sizes if args.videos else []) for n in args.sources]
    try:
        for mp, n, fmt in plan:
            sources = line_streams.streams(work, mp, n, args.frames, fmt, tuple(args.streams.split(",")))
            names = ["whole decode", "default"] if fmt == "jpeg" else ["default"]
            if args.baseline_tree is not None:
                names.insert(0, "baseline")
            jobs = [("ffrt run", name, lambda name=name: ffrt_run(
                model, sources, args.batch, SETTINGS[name], args.threads, args.backend,
                args.baseline_tree.resolve() if name == "baseline" else None)) for name in names]
            if fmt == "jpeg" and args.submit:
                jobs.append(("Detector.submit", "camera threads decode whole",
                             lambda: detector_submit(model, sources, args.batch, args.threads, args.backend)))
            for what, name, job in jobs:
                r, reference, cpu = ref.around(job)
                row = {"what": what, "format": fmt, "megapixels": mp, "sources": n, "setting": name, **r,
                       "model_only_images_per_s": reference, "vs_model_only": r["fps"] / reference,
                       "model_only_cpu_ms_per_image": cpu,
                       "cpu_vs_model_only": cpu / r["cpu_ms_per_frame"] if r.get("cpu_ms_per_frame") else None}
                report["rows"].append(row)
                print(_line(row), flush=True)
    finally:
        ref.child.close()
    report["load_average_1min"]["after"] = _loadavg()
    return report


def _line(row: dict) -> str:
    return (f"{row['what']:<15} {row['format']:<5} {row['megapixels']} MP x {row['sources']} source(s), "
            f"{row['setting']:<28} {row['fps']:6.1f} frames/s = {row['vs_model_only']:.2f}x model-only")


def markdown(report: dict) -> str:
    from ffeval.machine import one_line

    m = report["model_only"]
    b = m["batch"]
    lines = [f"# Line throughput, {report['created_at']}", "",
             f"Machine: {one_line(report['machine'])}; 1-min load {report['load_average_1min']['before']} before, "
             f"{report['load_average_1min']['after']} after.",
             f"Model: `{report['model']}`, {m['backend']}; model-only (its own process) at the start: "
             f"{m['images_per_s']:.1f} img/s at batch {b}; each row's own reference (taken right before and after it) "
             "in the model-only column.",
             f"Streams: {report['settings'].get('streams', 'elpv,deeppcb')} (the sources' image kinds in turn; "
             "benchmarks/line_streams.py).",
             f"Command: `{report['command']}`", "",
             "| what | frames | sources | decoding | frames/s | model-only img/s (batch %d) | x model-only | whole run "
             "frames/s | CPU ms per frame (model-only per image) | CPU-bound ratio | mean batch | p50 ms: preprocess / "
             "inference / postprocess |" % b, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        st = r.get("stage_p50_ms") or {}
        stages = " / ".join(f"{st[k]:.1f}" for k in ("preprocess", "inference", "postprocess") if k in st) or "-"
        mean_batch = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "-"
        lines.append(f"| {r['what']} | {r['megapixels']} MP {r['format'].upper()} | {r['sources']} | {r['setting']} | "
                     f"{r['fps']:.1f} | {r['model_only_images_per_s']:.1f} | {r['vs_model_only']:.2f}x | "
                     f"{r['fps_whole_run']:.1f} | {r['cpu_ms_per_frame']:.1f} ({r['model_only_cpu_ms_per_image']:.1f}) | "
                     f"{r['cpu_vs_model_only']:.2f}x | {mean_batch} | "
                     f"{stages} |")
    lines += ["", "frames/s: ffrt run over the frames after the first third of the run (results ready, from results.jsonl); "
              "Detector.submit: the same, from its futures' completion times; whole run: all frames. Model-only: the "
              "same backend and batch in a process of its own, the mean of a measurement right before and one right "
              "after the row. CPU ms per frame: CPU time of every thread of the process doing the work (ffrt run's "
              "summary; the benchmark's own process for Detector.submit; the model-only child per call) per frame; "
              "CPU-bound ratio = model-only CPU per image / CPU per frame: the share of the model's rate the line "
              "keeps where the CPU is the limit, which other processes on a shared machine distort less than "
              "wall-clock rates (a process with more busy threads takes a larger share of a contended CPU).",
              "", "Settings: default = `ffrt run` with no options (decoding threads; JPEG frames at least 4x the "
              "model input on both sides decoded at 1/2, 1/4 or 1/8, keeping at least twice the model input; maps "
              "at frame size only for flagged frames); whole decode = `--no-reduced-decode`; baseline = "
              f"`ffrt run` of {report['settings'].get('baseline_tree') or 'another checkout'} with its own defaults. "
              "MJPEG videos are decoded by OpenCV's VideoCapture in the source's thread (the decoding settings do "
              "not apply to them)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "demo" / "model.onnx")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "line_streams", help="where the streams are written")
    ap.add_argument("--sizes", default="1,2,5", help="megapixels of the frames (of 1, 2, 5)")
    ap.add_argument("--sources", default="1,4", help="numbers of sources (1-4)")
    ap.add_argument("--frames", type=int, default=48, help="frames per source")
    ap.add_argument("--batch", type=int, default=8, help="ffrt run's --max-batch and the model-only batch")
    ap.add_argument("--rounds", type=int, default=20, help="model-only timed calls per batch size")
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: ffrt's)")
    ap.add_argument("--backend", default="auto", help="the backend of every row (default auto: the one ffrt picks)")
    ap.add_argument("--videos", action="store_true", help="also MJPEG videos of the same frames")
    ap.add_argument("--streams", default="elpv,deeppcb",
                    help="the sources' image kinds in turn, of " + ", ".join(line_streams.KINDS) + " (default "
                    "elpv,deeppcb; elpv-line: good ELPV cells with one defective in "
                    f"{line_streams.LINE_DEFECT_EVERY}, as a line sends them)")
    ap.add_argument("--baseline-tree", type=Path, default=None, metavar="DIR",
                    help="also run the ffrt run of this checkout (another commit), with its defaults, on every JPEG row")
    ap.add_argument("--no-submit", dest="submit", action="store_false", help="leave out the Detector.submit rows")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "line-throughput.json")
    args = ap.parse_args(argv)
    args.sizes = [int(v) for v in args.sizes.split(",")]
    args.sources = [int(v) for v in args.sources.split(",")]
    if not set(args.sizes) <= set(line_streams.SIZES) or not all(1 <= n <= 4 for n in args.sources):
        ap.error(f"--sizes from {sorted(line_streams.SIZES)}, --sources from 1-4")
    if not set(args.streams.split(",")) <= set(line_streams.KINDS):
        ap.error(f"--streams: kinds from {', '.join(line_streams.KINDS)}, comma-separated")
    if not args.model.is_file():
        ap.error(f"{args.model}: no such model (make demo writes runs/demo/model.onnx)")
    report = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    md = markdown(report)
    args.json.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
