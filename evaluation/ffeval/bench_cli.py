"""ffbench: latency / throughput report of an exported model, per stage and batch size."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bench import DEFAULT_BATCHES, BenchError, parse_batches, run_benchmark


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ffbench",
        description=(
            "Time an exported ffrt model per stage (preprocess, inference, postprocess) and batch size: "
            "latency p50/p90/p99/max, images/s, peak RSS, MACs and achieved GFLOP/s against the CPU's "
            "peak, measured per precision on this machine (cached) beside the nominal formula; optionally next to "
            "PyTorch eager on the same checkpoint. Prints a table, "
            "writes JSON (schema ffeval.bench v3, see benchmarks/README.md) and a PNG."
        ),
    )
    ap.add_argument("model", help="model.onnx exported by ffexport")
    ap.add_argument("--backend", default="auto",
                    help="ffrt backend: auto (default; the fastest that works here), onnxruntime-cpu, openvino, "
                    "onnxruntime-cuda, ...; 'all': every backend and precision that runs here (OpenVINO in FP32 and, "
                    "on CPUs with native BF16, BF16), model-only, interleaved in one run, each against the peak of "
                    "its precision (schema ffeval.bench-all)")
    ap.add_argument("--batch", default=",".join(map(str, DEFAULT_BATCHES)),
                    help="comma-separated batch sizes (default 1,2,4,8,16; each <= the model's batch_max)")
    ap.add_argument("--iters", type=int, default=30, help="timed iterations per batch size (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations before each batch size (default 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU inference threads for ONNX Runtime and torch (default: physical cores)")
    ap.add_argument("--images", default=None,
                    help="frames to time on: a folder, or elpv:mono / elpv:poly (default: ELPV mono test cells if "
                         "installed, else random 300x300 frames)")
    ap.add_argument("--json", type=Path, default=None, help="write the report here (JSON)")
    ap.add_argument("--plot", type=Path, default=None, help="write latency/throughput-vs-batch PNG here")
    ap.add_argument("--vs-torch", metavar="CKPT", default=None,
                    help="also time the PyTorch eager model of this checkpoint (model.pt) on the same batches, "
                         "interleaved with the ONNX Runtime runs, and print the ratio")
    ap.add_argument("--fma-units", type=int, default=None,
                    help="FMA units per core for the nominal peak formula (default: 2 with FMA/AVX-512, which /proc/cpuinfo "
                         "cannot confirm)")
    ap.add_argument("--settle-ms", type=float, default=50.0,
                    help="untimed pause between runs of different engines (ONNX Runtime / PyTorch / Detector), so "
                         "the previous one's spin-waiting threads go idle first (default 50)")
    ap.add_argument("--quiet", action="store_true", help="print only the final table")
    return ap


def format_report(r: dict) -> str:
    m, be, mach = r["model"], r["backend"], r["machine"]
    cpu, peak, macs = mach["cpu"], mach["cpu_peak"], r["macs"]
    from .machine import one_line

    lines = [
        f"model    {m['path']}: {m['backbone']}{'' if m['backbone_pretrained'] else ' (random weights)'}, "
        f"{m['input']['height']}x{m['input']['width']}, {m['precision']} (target {m['target']}), "
        f"{macs['gmac_per_image']:.3f} GMAC/image (Conv+MatMul+Gemm from ONNX shapes)",
        f"backend  {be['description']}",
        f"machine  {one_line(mach)}",
        "software " + ", ".join(f"{k} {v}" for k, v in mach["software"].items() if v),
    ]
    if peak:
        lines.append(
            f"CPU peak {peak['fp32_gflops']:.1f} GFLOP/s FP32 = {peak['cores']} cores x {peak['ghz']:.3f} GHz x "
            f"{peak['fma_units']} FMA units x {peak['fp32_lanes']} lanes ({peak['simd_isa']}) x 2; "
            f"FMA units {peak['fma_units_source']}, nominal clock"
        )
        if peak.get("by_precision"):
            from .peaks import peak_lines

            lines += peak_lines(peak["by_precision"], peak["measured"])
    lines.append(f"images   {r['settings']['images']}; {r['settings']['iters']} iterations after {r['settings']['warmup']} warm-up")
    load = r.get("load_average_1min") or {}
    if load.get("before") is not None:
        busy = max(load["before"], load.get("after") or 0) > (cpu["logical_cpus"] or 1) + 0.5
        lines.append(f"load     1-min load average {load['before']:.2f} before, {load.get('after') or 0:.2f} after"
                     + ("  WARNING: other processes were using the CPU; figures are pessimistic" if busy else ""))
    lines.append("")
    head = (f"{'batch':>5} | {'pre p50':>8} | {'infer p50':>9} {'p90':>8} {'p99':>8} {'max':>8} | {'post p50':>8} | "
            f"{'total p50':>9} {'p99':>8} | {'img/s':>7} | {'GFLOP/s':>7} {'%peak':>6} | {'RSS MB':>7} | H2D/compute/D2H")
    has_torch = any(row["torch_eager"] for row in r["results"])
    if has_torch:
        head += " | torch eager p50 | ratio"
    lines += [head, "-" * len(head)]
    for row in r["results"]:
        s = row["stages"]
        parts = ("h2d", "compute", "d2h")  # present only when the backend measured them
        gpu = "/".join(f"{s[k]['p50_ms']:.2f}" if k in s else "-" for k in parts) if any(k in s for k in parts) else "n/a"
        frac = row["fraction_of_cpu_peak"]
        line = (f"{row['batch']:>5} | {s['preprocess']['p50_ms']:8.2f} | {s['inference']['p50_ms']:9.2f} "
                f"{s['inference']['p90_ms']:8.2f} {s['inference']['p99_ms']:8.2f} {s['inference']['max_ms']:8.2f} | "
                f"{s['postprocess']['p50_ms']:8.2f} | {s['total']['p50_ms']:9.2f} {s['total']['p99_ms']:8.2f} | "
                f"{row['throughput_images_per_s']['pipeline']:7.1f} | {row['achieved_gflops'] or 0:7.1f} "
                f"{(f'{100 * frac:5.1f}%') if frac is not None else '   n/a'} | {row['peak_rss_mb']:7.0f} | {gpu}")
        if has_torch:
            t = row["torch_eager"]
            line += f" | {t['inference']['p50_ms']:12.2f} ms | {t['ratio_p50']:.2f}x" if t else " | - | -"
        lines.append(line)
    lines.append("")
    lines.append("latencies in ms per call (whole batch); img/s = batch / mean total; GFLOP/s = 2 x MACs x batch / "
                 "inference p50; %peak vs the measured CPU peak of the precision that ran (CPU backends only)")
    if has_torch:
        lines.append("ratio = PyTorch eager p50 / ONNX Runtime inference p50 on the same uint8 batch, interleaved")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = (lambda s: None) if args.quiet else (lambda s: print(f"ffbench: {s}", file=sys.stderr, flush=True))
    try:
        batches = parse_batches(args.batch)
        if args.threads is not None and args.threads < 1:
            raise BenchError(f"--threads must be >= 1 (got {args.threads})")
        if args.settle_ms < 0:
            raise BenchError(f"--settle-ms must be >= 0 (got {args.settle_ms})")
        if args.fma_units is not None and args.fma_units < 1:
            raise BenchError(f"--fma-units must be >= 1 (got {args.fma_units})")
        if args.backend.strip().lower() == "all":
            return _all(args, batches, say, argv)
        report = run_benchmark(
            args.model, backend=args.backend, batches=batches, iters=args.iters, warmup=args.warmup,
            threads=args.threads, images=args.images, vs_torch=args.vs_torch, fma_units=args.fma_units,
            settle_ms=args.settle_ms,
            progress=say, command=["ffbench"] + (list(argv) if argv is not None else sys.argv[1:]),
        )
        print(format_report(report))
        if args.json:
            from ffcore.files import atomic_write_bytes

            atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
            say(f"wrote {args.json}")
        if args.plot:
            from .plots import bench_plot

            bench_plot(report, args.plot)
            say(f"wrote {args.plot}")
    except BenchError as e:
        print(f"ffbench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ffbench: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user, not a traceback
        print(f"ffbench: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1
    return 0


def _all(args, batches, say, argv) -> int:
    from .compare import format_comparison, run_comparison

    if args.vs_torch or args.plot:
        raise BenchError("--backend all compares the backends model-only: drop --vs-torch / --plot")
    report = run_comparison(args.model, batches, args.iters, args.warmup, args.threads, args.settle_ms,
                            args.fma_units, progress=say,
                            command=["ffbench"] + (list(argv) if argv is not None else sys.argv[1:]))
    print(format_comparison(report))
    if args.json:
        from ffcore.files import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
