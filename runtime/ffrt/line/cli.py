"""``ffrt run MODEL SOURCE... --out DIR``: the line runner.

Several sources at once (image folders and globs, video files, cameras, stream URLs; see
ffrt.line.sources), one Detector with dynamic batching, every frame's result as a JSON line
(ffrt.line.writer), a progress bar, a summary, Prometheus metrics on request (ffrt.line.metrics).
The loop itself is ffrt.line.runner; this module is the command line around it.

Exit codes: 0 every frame scored or deliberately dropped; 1 an unreadable or corrupt
frame, a source that could not be opened or disconnected, or an ffrt error before the
run; 130 Ctrl-C (SIGINT), 143 SIGTERM: the frames already submitted are written and the
summary follows, as for a complete run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ..basecli import Tool, add_inference_args, add_limit_args, detector_config
from ..batching import POLICIES
from ..errors import InvalidArgumentError, QueueFullError
from .decode import MIN_OVERSAMPLE, REDUCED_DECODE_DEFAULT, DecodeSettings, default_decode_threads

PROGRESS_EVERY_S = 10.0


class RunTool(Tool):
    name = "run"
    help = "score frames from folders, globs, video files, cameras and streams; one JSON line per frame"
    description = (
        "Read every SOURCE in its own thread and score its frames with MODEL, batching frames of all sources "
        "together. SOURCE: a folder of images (name order), a glob ('parts/*.png', quoted), an image file, a "
        "video file, a camera index (0) or a stream URL (rtsp://...). Writes into --out: results.jsonl (one "
        "JSON object per frame: source, frame index or file, time, status, verdict, score, normalized score, "
        "regions, latencies), results.csv (--csv), overlays/ and masks/ of rejected frames (--overlays, "
        "--masks) and summary.json. An unreadable file or a corrupt frame is reported and skipped; a source "
        "that ends or disconnects does not stop the others; Ctrl-C stops reading, writes the frames already "
        "submitted and the summary, and exits with 130."
    )

    def add_args(self, parser):
        parser.add_argument("model", metavar="MODEL", help="an .onnx model exported by ffexport")
        parser.add_argument("sources", metavar="SOURCE", nargs="+", help="folder, glob, image or video file, camera index, or stream URL")
        parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the results (created; must not hold an earlier run's results)")
        src = parser.add_argument_group("sources")
        src.add_argument(
            "--source-name", action="append", metavar="NAME",
            help="name of each source in the results (the camera), once per SOURCE in order; default: from the "
            "folder or file name, cameraN, or the stream's host",
        )
        src.add_argument("-r", "--recursive", action="store_true", help="also take the images in sub-folders of folder sources")
        src.add_argument(
            "--realtime", action="store_true",
            help="read video files at their own frame rate, as a camera delivers them (default: as fast as they are scored)",
        )
        src.add_argument(
            "--reduced-decode", action=argparse.BooleanOptionalAction, default=REDUCED_DECODE_DEFAULT,
            help=f"decode a JPEG frame that is at least {2 * MIN_OVERSAMPLE}, {4 * MIN_OVERSAMPLE} or "
            f"{8 * MIN_OVERSAMPLE} times the model input on both sides at 1/2, 1/4 or 1/8 of its size, which costs a "
            "fraction of a full decode and resize; results stay in the frame's own coordinates (default: "
            f"{'on' if REDUCED_DECODE_DEFAULT else 'off'}; --no-reduced-decode decodes every frame whole; the score "
            "change it causes is measured in benchmarks/README.md)",
        )
        src.add_argument(
            "--decode-threads", type=int, default=None, metavar="N",
            help="threads decoding image files ahead of the model, shared by the sources, each source's frames kept "
            "in order (default: one per physical core; 0: each source decodes in its own thread)",
        )
        add_limit_args(src)
        add_inference_args(parser.add_argument_group("inference"))
        batching = parser.add_argument_group("batching and queue")
        batching.add_argument("--max-batch", type=int, default=None, metavar="N", help="most frames scored in one backend call (default: the Detector's)")
        batching.add_argument("--max-delay-ms", type=float, default=None, metavar="MS", help="longest a frame waits for a batch to fill (default: the Detector's)")
        batching.add_argument("--queue-size", type=int, default=None, metavar="N", help="frames waiting for scoring at most (default: the Detector's)")
        batching.add_argument(
            "--queue-policy", choices=POLICIES, default="block",
            help="when the queue is full: block the source (default; files lose nothing), reject the new frame, or "
            "drop_oldest (live cameras: the newest frame matters). Rejected and dropped frames are counted and "
            "listed in results.jsonl with status 'refused' / 'dropped'",
        )
        batching.add_argument("--min-region-px", type=int, default=None, metavar="N", help="defect regions smaller than N pixels are not reported")
        out = parser.add_argument_group("output")
        out.add_argument("--csv", action="store_true", help="also write results.csv")
        out.add_argument("--overlays", action="store_true", help="write overlays/SOURCE/*.png (heatmap over the frame) for rejected frames")
        out.add_argument("--masks", action="store_true", help="write masks/SOURCE/*.png (defect mask, 0/255) for rejected frames")
        mon = parser.add_argument_group("monitoring")
        mon.add_argument(
            "--metrics-port", type=int, default=None, metavar="N",
            help="serve Prometheus metrics on port N (0: any free port, printed); needs the extra 'metrics'",
        )
        mon.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR", help="address to serve metrics on (default 127.0.0.1: this machine only)")

    def run(self, args):
        from ffcore.progress import is_terminal, progress

        from .runner import LineRun
        from .metrics import require_prometheus
        from ..config import DetectorConfig
        from ..detector import Detector
        from ..postprocess import FLAGGED
        from .decode import FrameDecoder
        from .writer import RunOutputs
        from .sources import parse_sources

        # Everything that can be refused is refused before the model loads.
        specs = parse_sources(args.sources, args.source_name, args.recursive)
        decoding = decode_settings(args)
        if args.metrics_port is not None:
            require_prometheus()
        outputs = RunOutputs(args.out, csv_too=args.csv, overlays=args.overlays, masks=args.masks)
        outputs.check()
        # Maps at frame size only where a record or a picture needs them (postprocess.FLAGGED):
        # a passing frame's records are the same either way.
        config = DetectorConfig.build(detector_config(args), resize_outputs=FLAGGED)
        with Detector(args.model, config) as det:
            warm_up(det)
            t = det.thresholds
            header = {
                "model": str(args.model), "backend": det.backend_description,
                "thresholds": {"image": t.image, "pixel": t.pixel, "source": t.source},
                "queue_policy": args.queue_policy,
                "decode": {"reduced_jpeg": decoding.reduced, "threads": decoding.threads},
            }
            run = LineRun(
                det.submit, specs, FrameDecoder(det.limits, det.meta.input, decoding.reduced), outputs,
                queue_full=(QueueFullError,), realtime=args.realtime, header=header,
                codec_trained=bool(det.meta.augmentation and det.meta.augmentation.jpeg_share > 0),
                decode_threads=decoding.threads, decode_ahead=decoding.frames_ahead,
            )
            # The metrics port is taken before anything is shown or written: a port in use fails cleanly.
            metrics = _start_metrics(args.metrics_host, args.metrics_port, run, det) if args.metrics_port is not None else None
            total = sum(len(s.files) for s in specs) if all(s.kind == "images" for s in specs) else None
            run.progress = bar = progress(desc="run", unit="frames", total=total, every_s=PROGRESS_EVERY_S)
            run.say = say = _sayer(bar if is_terminal(sys.stderr) else None)
            try:
                if metrics is not None:
                    run.on_frame = metrics.observe
                outputs.open()
                for s in specs:
                    say(f"ffrt: {s.name}: {s.describe()}")
                got = _catch_signals(run)
                try:
                    status = run.run()
                finally:
                    got.restore()
            finally:
                run.show_totals()
                bar.close()
                if metrics is not None:
                    metrics.close()
            summary = _final_summary(run, det)
            outputs.write_summary(summary)
        print_summary(summary)
        if status == "interrupted":
            print(f"ffrt: interrupted; the results of the {summary['totals']['frames']} frame(s) handled are in {args.out}", file=sys.stderr)
            return 128 + (got.signum or signal.SIGINT)
        if summary["totals"]["errors"] or summary["totals"]["sources_failed"]:
            print("ffrt: error: some frames or sources could not be read (see above and summary.json)", file=sys.stderr)
            return 1
        return 0


def warm_up(det) -> None:
    """One backend call at every batch size the batcher can form, before the first frame: a
    backend that builds its graph per batch size (OpenVINO's static shapes) does it now, not
    in the middle of the line's first seconds."""
    from ..detector import DEFAULT_BATCH_SIZE

    for size in range(1, (det.config.max_batch or det.meta.batch_max or DEFAULT_BATCH_SIZE) + 1):
        det.warmup(n=1, batch_size=size)


def decode_settings(args) -> DecodeSettings:
    """The command line's decoding options as the runner's typed settings."""
    threads = default_decode_threads() if args.decode_threads is None else args.decode_threads
    if threads < 0:
        raise InvalidArgumentError(f"--decode-threads must be 0 or more, not {threads}")
    return DecodeSettings(reduced=args.reduced_decode, threads=threads)


def _final_summary(run, det) -> dict:
    """The run's summary with the Detector's own view: stage latencies and counters per
    source and overall (pipeline_stats), and the drift state (health)."""
    summary = run.summary({"pipeline": det.pipeline_stats().to_dict(), "health": det.health().to_dict()})
    for s in summary["sources"]:
        s["pipeline"] = det.pipeline_stats(s["name"]).to_dict()
    return summary


def _start_metrics(address: str, port: int, run, det):
    from .metrics import RunMetrics

    def snapshot() -> dict:
        return {**run.live(), "queue_depth": det.pipeline_stats().queue_depth, "drift": det.health().to_dict()}

    metrics = RunMetrics(snapshot)
    port = metrics.serve(address, port)
    host = f"[{address}]" if ":" in address else address
    print(f"ffrt: metrics: http://{host}:{port}/metrics", file=sys.stderr, flush=True)
    return metrics


class _Signals:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict = {}

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _catch_signals(run) -> _Signals:
    """First SIGINT/SIGTERM: stop reading and finish what was submitted; second: stop now.
    The handler only sets events: a KeyboardInterrupt raised between a line's write and its
    count would make the summary disagree with the file."""
    got = _Signals()
    if threading.current_thread() is not threading.main_thread():
        return got  # signals are delivered to the main thread only; a caller's thread keeps its own

    def handler(signum, frame):
        if run.stop.is_set():
            run.abort.set()
        else:
            got.signum = signum
            run.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        got.previous[sig] = signal.signal(sig, handler)
    return got


def _sayer(bar):
    """Messages to stderr, above the progress bar when there is one."""
    if bar is None:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return lambda msg: bar.write(msg, file=sys.stderr)


def print_summary(summary: dict) -> None:
    width = max(len(s["name"]) for s in summary["sources"])
    for s in summary["sources"]:
        extra = "".join(f", {s[k]} {k}" for k in ("errors", "dropped", "refused") if s[k])
        print(f"{s['name']:<{width}}  {s['frames']} frames: {s['fail']} FAIL, {s['pass']} PASS{extra}; {s['ended']}")
    t = summary["totals"]
    extra = "".join(f", {t[k]} {k}" for k in ("errors", "dropped", "refused", "abandoned") if t[k])
    print(
        f"total: {t['frames']} frames in {t['elapsed_s']:.1f} s: {t['fail']} FAIL, {t['pass']} PASS{extra}; "
        f"{t['fps']:.1f} frames/s scored, reject rate {100 * t['reject_rate']:.1f}%"
    )
    print(f"latency: {_latency_line(summary['pipeline'])}")
    h = summary["health"]
    print(f"drift: {h['state']}: {h['reason']}")
    print(f"backend: {summary['backend']}")
    print(f"results: {', '.join(summary['outputs'])}")


def _latency_line(p: dict) -> str:
    """p50 / p99 of each stage (ms), from PipelineStats.to_dict()."""
    if not p.get("count"):
        return "no frame scored"
    stages = ("queue", "preprocess", "inference", "postprocess", "latency")
    parts = [f"{'total' if k == 'latency' else k} {p[k]['p50_ms']:.1f}/{p[k]['p99_ms']:.1f}" for k in stages]
    return f"p50/p99 ms: {', '.join(parts)}; {p['mean_batch_size']:.1f} frames per batch"
