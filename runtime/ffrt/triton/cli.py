"""``ffrt triton-repo`` and ``ffrt serve``: the subcommands of this package (ffrt.cli dispatches)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..basecli import Tool, detector_config


def _batch_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--max-batch", type=int, default=None, metavar="N",
        help=f"largest batch Triton's dynamic batcher forms for {what} (default: the model's batch_max, else 8; "
        "at most batch_max). 1 = no batching",
    )
    parser.add_argument(
        "--max-delay-ms", type=float, default=2.0, metavar="MS",
        help="longest a request waits in Triton's queue for others to join its batch (default 2 ms)",
    )


def _limit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse images larger than N pixels (default: ffrt's 100 megapixels)")
    parser.add_argument("--min-side", type=int, default=None, metavar="N",
                        help="refuse images whose shorter side is below N pixels (default: ffrt's 8)")
    parser.add_argument("--min-region-px", type=int, default=0, metavar="N",
                        help="leave regions of fewer than N pixels out of each result's regions (default 0: all); the "
                        "verdict stays the score's")


def _delay_us(ms: float) -> int:
    from ..errors import InvalidArgumentError

    if not ms >= 0:
        raise InvalidArgumentError(f"--max-delay-ms must be >= 0, not {ms}.")
    return int(round(ms * 1000))


class TritonRepoTool(Tool):
    name = "triton-repo"
    help = "write a Triton Inference Server model repository for an exported model"
    description = (
        "Write DIR/ffrt_model (the fused graph on Triton's ONNX Runtime backend, dynamic batching) and "
        "DIR/ffrt_detector (ffrt's Python-backend model: encoded or raw image in, score, verdict, normalized score, "
        "mask and regions out; it calls ffrt_model by BLS). The thresholds are ffrt_detector's config.pbtxt "
        "parameters, written from the model's metadata: edit them and reload the model to re-tune. Triton's Python "
        "backend needs ffrt installed in its Python environment (docker/Dockerfile.triton). Existing files are "
        "replaced all together or not at all."
    )

    def add_args(self, parser):
        parser.add_argument("model", metavar="MODEL", type=Path, help="an .onnx model exported by ffexport")
        parser.add_argument("out", metavar="DIR", type=Path, help="the model repository folder (created if missing)")
        parser.add_argument("--kind", choices=("gpu", "cpu"), default="gpu",
                            help="where ffrt_model's instances run: gpu (default, KIND_GPU) or cpu (KIND_CPU)")
        parser.add_argument("--instances", type=int, default=1, metavar="N",
                            help="instances of each model (default 1; several overlap requests on one GPU)")
        _batch_args(parser, "both models")
        _limit_args(parser)

    def run(self, args):
        from .repository import Options, write_repository

        opts = Options(max_batch=args.max_batch, delay_us=_delay_us(args.max_delay_ms), kind=args.kind,
                       instances=args.instances, max_pixels=args.max_pixels, min_side=args.min_side,
                       min_region_px=args.min_region_px)
        for path in write_repository(args.model, args.out, opts):
            print(f"wrote {path}")
        print(f"serve it: tritonserver --model-repository={args.out.resolve()} (see docker/README.md)")
        return 0


class ServeTool(Tool):
    name = "serve"
    help = "serve a model on a Triton Inference Server here (PyTriton; HTTP, gRPC, metrics)"
    description = (
        "Start NVIDIA's Triton Inference Server (bundled with PyTriton: pip install \"ffrt[serve]\" in a virtual "
        "environment of its own, see docs/triton.md) with two models: ffrt_model, the graph on an ffrt Detector's "
        "backend with Triton's dynamic batching, and ffrt_detector, which takes an encoded image (PNG, JPEG, ...) or "
        "a raw uint8 array of any size and answers like ffrt.Detector (ffrt.client.RemoteDetector calls it). "
        "Health (/v2/health/ready) and Prometheus metrics (/metrics on --metrics-port) are Triton's. "
        "Ctrl-C or SIGTERM stops it."
    )

    def add_args(self, parser):
        from ..backends import backend_names

        parser.add_argument("model", metavar="MODEL", type=Path, help="an .onnx model exported by ffexport (or an engine)")
        net = parser.add_argument_group("network")
        net.add_argument(
            "--address", default="127.0.0.1",
            help="address to listen on (default 127.0.0.1: this machine only). Triton does not authenticate inference: "
            "another address (0.0.0.0: every interface) opens it to the network, with a warning",
        )
        net.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default 8000)")
        net.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
        net.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
        net.add_argument(
            "--access-token", default=None, metavar="TOKEN",
            help="token (header triton-access-token) for Triton's model-repository endpoints, e.g. to reload "
            "ffrt_detector with new thresholds (default: a random one; those endpoints are then closed)",
        )
        run = parser.add_argument_group("inference")
        run.add_argument("--backend", default="auto", metavar="NAME",
                         help=f"inference backend for ffrt_model: {', '.join(backend_names())} (default auto)")
        run.add_argument("--threads", type=int, default=None, metavar="N", help="CPU inference threads (default: all physical cores)")
        _batch_args(parser, "ffrt_model and ffrt_detector")
        _limit_args(parser)

    def run(self, args):
        from .serve import serve

        return serve(
            args.model, detector_config(args), address=args.address, http_port=args.http_port,
            grpc_port=args.grpc_port, metrics_port=args.metrics_port, access_token=args.access_token,
        )
