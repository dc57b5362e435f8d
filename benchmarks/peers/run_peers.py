"""FastFlow peers side by side: anomalib's FastFlow (ONNX Runtime, OpenVINO default precision,
OpenVINO FP32, PyTorch eager) against ffrt's paths on the same ResNet-18 configuration, plus
ffrt's default EfficientNet-Lite0 model. Each runtime's rows are timed interleaved in a process of
their own (ONNX Runtime, OpenVINO, PyTorch one after the other: in one process each runtime would
be timed against the others' spinning threads), and a check says how far ffrt's ONNX Runtime row
moves when it shares a process with PyTorch eager. Not part of CI.

    python benchmarks/peers/run_peers.py            # all steps: env (if needed), models (if missing), timing
    python benchmarks/peers/run_peers.py --setup    # only create/refresh benchmarks/peers/.venv
    python benchmarks/peers/run_peers.py --prepare  # (re)build and export both ResNet-18 FastFlows
    python benchmarks/peers/run_peers.py --time     # only the timing run (models must exist)
    python benchmarks/peers/run_peers.py --profile  # per-stage / per-layer profile of ffrt's best path
    python benchmarks/peers/run_peers.py --time --avx2-proxy  # the non-AMX/VNNI bar, proxied on an AMX CPU

The environment (anomalib, OpenVINO, ONNX Runtime, torch, ffrt's dependencies) is the
script's own, ``benchmarks/peers/.venv``, built from the package registry; the timing runs
this checkout's ffrt sources. Nothing is downloaded at run time: anomalib's backbone is built
with its ImageNet weights off (random weights; the time does not depend on them). Results:
``benchmarks/results/peers/peers.json`` and ``peers.md`` (machine, every row, ratios, bars).
This top level uses the standard library only; the steps re-run the script inside the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_models  # noqa: E402  (standard library at import; torch and anomalib inside its functions)
import peers_env  # noqa: E402

ROOT = peers_env.ROOT
DEFAULT_WORK = ROOT / "runs" / "peers"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "peers"
DEFAULT_LITE0 = ROOT / "runs" / "demo" / "model.onnx"


def _batches(text: str) -> str:
    try:
        values = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give batch sizes as integers, e.g. 1,8") from None
    if not values or any(not 1 <= b <= build_models.BATCH_MAX for b in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: batch sizes must be in 1..{build_models.BATCH_MAX} (ffrt's graphs are exported for that range)")
    return text


def _at_least(low: int):
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value
    return check


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_peers.py", description=__doc__.splitlines()[0] + " ...",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    steps = p.add_argument_group("steps (none given: all that are needed, then the timing)")
    steps.add_argument("--setup", action="store_true", help="create or refresh the peers venv")
    steps.add_argument("--prepare", action="store_true", help="build and export both ResNet-18 FastFlows")
    steps.add_argument("--time", action="store_true", help="the interleaved timing run")
    steps.add_argument("--profile", action="store_true", help="profile ffrt's best path on the ResNet-18 model")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"model folder (default {DEFAULT_WORK.relative_to(ROOT)})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--lite0-model", type=Path, default=DEFAULT_LITE0,
                   help="ffrt's default model (make demo writes it; default runs/demo/model.onnx); rows skipped if absent")
    p.add_argument("--batches", type=_batches, default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--rounds", type=_at_least(1), default=15, help="timed interleaved rounds per batch (default 15)")
    p.add_argument("--warmup", type=_at_least(0), default=2, help="untimed rounds first (default 2)")
    p.add_argument("--threads", type=_at_least(1), default=2, help="threads of every engine (default 2)")
    p.add_argument("--settle-ms", type=_milliseconds, default=50.0, help="untimed pause between runners (default 50)")
    p.add_argument("--no-torch", action="store_true", help="leave out the PyTorch eager rows")
    p.add_argument("--avx2-proxy", action="store_true",
                   help="time only the OpenVINO FP32 rows with oneDNN limited to AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2): "
                        "a proxy for the bar on CPUs without AMX/VNNI, for machines that have them; "
                        "results in peers-avx2-proxy.{json,md}")
    p.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    # The timing step's children: one runtime's rows (or the isolation check's pair) -> a JSON file.
    p.add_argument("--engine-only", default=None, help=argparse.SUPPRESS)
    p.add_argument("--partial", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.avx2_proxy and args.profile:
        parser.error("--avx2-proxy times FP32 rows only; run --profile without it")
    if not args.in_venv:
        if args.setup or not peers_env.is_ready():
            peers_env.setup()
        if args.setup and not (args.prepare or args.time or args.profile):
            return 0
        cmd = [str(peers_env.venv_python()), str(Path(__file__).resolve()), *argv, "--in-venv"]
        env = peers_env.child_env()
        if args.avx2_proxy:
            # Read by oneDNN when OpenVINO first loads it: it must be in the child's environment.
            env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
        return subprocess.run(cmd, env=env).returncode
    return in_venv(args, argv)


def in_venv(args, argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a model hub
    if args.engine_only:
        from peers_timing import engine_child

        return engine_child(args)
    explicit = args.prepare or args.time or args.profile
    missing = [p for p in (build_models.anomalib_paths(args.work)["openvino"], build_models.ffrt_paths(args.work)["onnx"])
               if not p.is_file()]
    if args.prepare or (not explicit and missing):
        print(f"building the ResNet-18 FastFlows into {args.work}", flush=True)
        build_models.main(["--work", str(args.work)])
    elif missing:
        raise SystemExit(f"missing {', '.join(map(str, missing))}: run with --prepare first")
    if args.time or not explicit:
        from peers_timing import run_timing

        report = run_timing(args, argv)
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "peers-avx2-proxy" if args.avx2_proxy else "peers"
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
        from report import markdown

        (args.out / f"{stem}.md").write_text(markdown(report))
        print(markdown(report))
        print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    if args.profile:
        from profile_best import run_profile

        run_profile(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
