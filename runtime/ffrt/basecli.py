"""What every ``ffrt`` subcommand is built from: the Tool base class and the argument groups
that several subcommands share (detect, run, serve). The subcommands live in cli.py,
line/cli.py and triton/cli.py; cli.py assembles them, so they import this module, not cli.py."""

from __future__ import annotations

import argparse


class Tool:
    """One subcommand: a name, a help line, its arguments, and what it does."""

    name = ""
    help = ""
    description = ""

    def add_args(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def add_limit_args(group) -> None:
    """--max-pixels, --min-side: the image sizes the Detector accepts (detect, run)."""
    from .preprocess import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE

    group.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help=f"refuse images larger than N pixels (height x width), read from the file header before decoding "
        f"(default {DEFAULT_MAX_PIXELS}: {DEFAULT_MAX_PIXELS / 1e6:g} megapixels)",
    )
    group.add_argument(
        "--min-side", type=int, default=DEFAULT_MIN_SIDE, metavar="N",
        help=f"refuse images whose shorter side is below N pixels (default {DEFAULT_MIN_SIDE})",
    )


def add_inference_args(group) -> None:
    """--backend, --threads, --device and the threshold overrides (detect, run)."""
    from .backends import backend_names

    # No argparse `choices`: a planned name (tensorrt) should get ffrt's message saying
    # what it needs, not a bare "invalid choice".
    group.add_argument(
        "--backend", default="auto", metavar="NAME",
        help=f"inference backend: {', '.join(backend_names())}. 'auto' (default) picks the fastest "
        "that works here and says which; 'ffrt backends' lists what this machine can run",
    )
    group.add_argument("--threads", type=int, default=None, metavar="N", help="CPU inference threads (default: all physical cores)")
    group.add_argument(
        "--precision", default="auto", metavar="P",
        help="CPU compute precision: auto (default: FP32, or BF16 on OpenVINO where the file carries a passed BF16 "
        "gate and the CPU computes BF16 natively), fp32, or bf16 (OpenVINO on a CPU with AMX or AVX512-BF16)",
    )
    group.add_argument("--device", type=int, default=0, metavar="N", help="GPU index for the GPU backends (default 0)")
    group.add_argument("--image-threshold", type=float, default=None, metavar="T", help="override the model's image threshold: score > T is FAIL")
    group.add_argument("--pixel-threshold", type=float, default=None, metavar="T", help="override the model's pixel threshold: map > T is in the defect mask")


#: Command-line destinations that are Detector settings (DetectorConfig.build's flat names).
_DETECTOR_SETTINGS = ("backend", "threads", "device", "precision", "color_order", "image_threshold", "pixel_threshold",
                      "max_pixels", "min_side", "min_region_px", "max_batch", "max_delay_ms", "queue_size",
                      "queue_policy")


def detector_config(args: argparse.Namespace):
    """The one mapping from parsed command-line arguments to a DetectorConfig (detect, run,
    serve, info): every Detector setting the subcommand defines; an option left at None keeps
    the Detector's default."""
    from .config import DetectorConfig

    given = {k: getattr(args, k) for k in _DETECTOR_SETTINGS if getattr(args, k, None) is not None}
    return DetectorConfig.build(**given)
