"""Line throughput: frames per second end to end, beside the model-only rate at the same batch.

    python benchmarks/line_throughput.py --model runs/demo/model.onnx [--sizes 1,2,5] [--sources 1,4]
        [--frames 48] [--batch 8] [--videos] [--json benchmarks/results/line-throughput.json]

What is timed, on recorded camera-like streams (benchmarks/line_streams.py: real ELPV cells and
DeepPCB boards upscaled to 1, 2 or 5 megapixels, JPEG folders or MJPEG videos):

- ``ffrt run`` as a user runs it (``python -m ffrt run MODEL SOURCE... --max-batch N``, a process
  of its own), frames/s = frames scored / the run's elapsed time (summary.json: from the first
  source opened to the last frame written; the model load is before it). Each stream set runs
  under two decoding settings: ``before`` (each source decodes its files whole in its own
  thread: ``--decode-threads 0 --no-reduced-decode``) and ``after`` (the decoding pool, and JPEG
  frames decoded at a reduced resolution: ``--reduced-decode``);
- ``Detector.submit`` from several camera threads in one process, each thread decoding its
  own JPEG files whole (``cv2.imdecode``) and submitting them, as an integrator's code does;
- the model alone at the same batch (ffbench's "inference" stage, ``backend.run`` on a uint8
  batch at the model size) in a process of its own (ffeval.modelonly).

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
SETTINGS = {
    "before": ["--decode-threads", "0", "--no-reduced-decode"],
    "pool": ["--no-reduced-decode"],
    "after": ["--reduced-decode"],
}


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def model_only(model: Path, batch: int, rounds: int, threads: int | None) -> dict:
    """The model alone at ``batch`` (and 1), in its own process: {batch: img/s}."""
    from ffeval.modelonly import time_in_child
    from ffrt.metafile import read_onnx_meta

    spec = read_onnx_meta(model).input
    images = np.random.default_rng(0).integers(0, 256, (batch, spec.height, spec.width, 3), dtype=np.uint8)
    got = time_in_child(model, images, tuple(sorted({1, batch})), rounds, threads=threads)
    return {"backend": got["backend"], **{int(b): batch_rate(s, int(b)) for b, s in got["results"].items()}}


def batch_rate(stats: dict, batch: int) -> float:
    """Images per second at the p50 latency of one call."""
    return batch * 1000.0 / stats["p50_ms"]


def ffrt_run(model: Path, sources: list[Path], batch: int, extra: list[str], threads: int | None) -> dict:
    """One ``ffrt run`` in its own process; its summary's totals and pipeline figures."""
    with tempfile.TemporaryDirectory(prefix="line-throughput-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "ffrt", "run", str(model), *map(str, sources), "--out", str(out),
               "--max-batch", str(batch), *extra] + (["--threads", str(threads)] if threads else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"ffrt run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
    t, p = summary["totals"], summary["pipeline"]
    return {"frames": t["scored"], "elapsed_s": t["elapsed_s"], "fps": t["fps"], "fail": t["fail"],
            "mean_batch": p.get("mean_batch_size"), "decode": summary.get("decode"),
            "stage_p50_ms": {k: p[k]["p50_ms"] for k in ("queue", "preprocess", "inference", "postprocess", "latency")
                             if isinstance(p.get(k), dict)},
            "command": "ffrt run MODEL " + " ".join(f"<{s.name}>" for s in sources) + f" --max-batch {batch} "
                       + " ".join(extra)}


def detector_submit(model: Path, sources: list[Path], batch: int, threads: int | None) -> dict:
    """Camera threads, one per source: each decodes its JPEG files whole and submits them to one
    Detector; frames/s from the first submission to the last result."""
    from ffrt import Detector
    from ffrt.preprocess import read_image_file

    with Detector(model, threads=threads, max_batch=batch) as det:
        det.warmup(batch_size=batch)
        futures: list = []
        lock = threading.Lock()

        def camera(folder: Path, name: str) -> None:
            for path in sorted(folder.glob("*.jpg")):
                fut = det.submit(read_image_file(path, det.limits, det.meta.input), source=name)
                with lock:
                    futures.append(fut)

        cams = [threading.Thread(target=camera, args=(s, f"cam{k}")) for k, s in enumerate(sources)]
        t0 = time.perf_counter()
        for c in cams:
            c.start()
        for c in cams:
            c.join()
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - t0
    return {"frames": len(results), "elapsed_s": elapsed, "fps": len(results) / elapsed,
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
                           "jpeg_quality": line_streams.JPEG_QUALITY, "sizes": {mp: list(wh) for mp, wh in
                                                                                  line_streams.SIZES.items()}},
              "load_average_1min": {"before": _loadavg()}, "rows": []}
    print("model only, its own process ...", flush=True)
    report["model_only"] = model_only(model, args.batch, args.rounds, args.threads)
    reference = report["model_only"][args.batch]
    print(f"  {reference:.1f} img/s at batch {args.batch} ({report['model_only']['backend']})", flush=True)
    plan = [(mp, n, "jpeg") for mp in args.sizes for n in args.sources]
    plan += [(mp, n, "mjpeg") for mp in (args.sizes if args.videos else []) for n in args.sources]
    for mp, n, fmt in plan:
        sources = line_streams.streams(work, mp, n, args.frames, fmt)
        settings = ["before", "pool", "after"] if fmt == "jpeg" else ["after"]
        for name in settings:
            r = ffrt_run(model, sources, args.batch, SETTINGS[name], args.threads)
            row = {"what": "ffrt run", "format": fmt, "megapixels": mp, "sources": n, "setting": name, **r,
                   "vs_model_only": r["fps"] / reference}
            report["rows"].append(row)
            print(_line(row), flush=True)
        if fmt == "jpeg" and args.submit:
            r = detector_submit(model, sources, args.batch, args.threads)
            row = {"what": "Detector.submit", "format": fmt, "megapixels": mp, "sources": n,
                   "setting": "camera threads decode whole", **r, "vs_model_only": r["fps"] / reference}
            report["rows"].append(row)
            print(_line(row), flush=True)
    report["load_average_1min"]["after"] = _loadavg()
    return report


def _line(row: dict) -> str:
    return (f"{row['what']:<15} {row['format']:<5} {row['megapixels']} MP x {row['sources']} source(s), "
            f"{row['setting']:<28} {row['fps']:6.1f} frames/s = {row['vs_model_only']:.2f}x model-only")


def markdown(report: dict) -> str:
    from ffeval.machine import one_line

    m = report["model_only"]
    b = report["settings"]["batch"]
    lines = [f"# Line throughput, {report['created_at']}", "",
             f"Machine: {one_line(report['machine'])}; 1-min load {report['load_average_1min']['before']} before, "
             f"{report['load_average_1min']['after']} after.",
             f"Model: `{report['model']}`, {m['backend']}; model-only (its own process): {m[1]:.1f} img/s at batch 1, "
             f"**{m[b]:.1f} img/s at batch {b}**.",
             f"Command: `{report['command']}`", "",
             "| what | frames | sources | decoding | frames/s | x model-only (batch %d) | mean batch | p50 ms: preprocess / "
             "inference / postprocess |" % b, "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        st = r.get("stage_p50_ms") or {}
        stages = " / ".join(f"{st[k]:.1f}" for k in ("preprocess", "inference", "postprocess") if k in st) or "-"
        mean_batch = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "-"
        lines.append(f"| {r['what']} | {r['megapixels']} MP {r['format'].upper()} | {r['sources']} | {r['setting']} | "
                     f"{r['fps']:.1f} | {r['vs_model_only']:.2f}x | {mean_batch} | {stages} |")
    lines += ["", "Decoding: before = each source decodes its files whole in its own thread; pool = the decoding "
              "threads, whole decode; after = the decoding threads and reduced-resolution JPEG decoding "
              "(`--reduced-decode`). MJPEG videos are decoded by OpenCV's VideoCapture in the source's thread "
              "(neither setting applies to them)."]
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
    ap.add_argument("--videos", action="store_true", help="also MJPEG videos of the same frames")
    ap.add_argument("--no-submit", dest="submit", action="store_false", help="leave out the Detector.submit rows")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "line-throughput.json")
    args = ap.parse_args(argv)
    args.sizes = [int(v) for v in args.sizes.split(",")]
    args.sources = [int(v) for v in args.sources.split(",")]
    if not set(args.sizes) <= set(line_streams.SIZES) or not all(1 <= n <= 4 for n in args.sources):
        ap.error(f"--sizes from {sorted(line_streams.SIZES)}, --sources from 1-4")
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
