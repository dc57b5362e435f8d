"""The ``ffrt`` command: look inside a model, run it on image files, list backends.

    ffrt info MODEL
    ffrt detect MODEL IMAGE_OR_DIR... [--backend B] [--json FILE] [--overlays DIR] [--color-order BGR|RGB]
    ffrt run MODEL SOURCE... --out DIR [--source-name NAME]... [--csv] [--metrics-port N]   (ffrt.line.cli)
    ffrt backends
    ffrt doctor [MODEL.onnx] [--device N]
    ffrt triton-repo MODEL DIR [--kind gpu|cpu]       (ffrt.triton.cli)
    ffrt serve MODEL [--http-port] [--grpc-port] [--max-batch] [--max-delay-ms]

Layered like Polygraphy's CLIs: each subcommand is a small ``Tool`` that adds its own
argument groups and runs; ``main`` only dispatches and turns every ffrt error into one
line ``ffrt: error: ...`` and a non-zero exit code.

Exit codes: 0 success; 1 an ffrt error (bad model, backend missing, unreadable image);
2 bad command line (argparse); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import FFRTError, ImageFileError, InvalidImageError
from .result import json_float
from .basecli import Tool, add_inference_args, add_limit_args, detector_config
from ffcore.files import IMAGE_SUFFIXES


class InfoTool(Tool):
    name = "info"
    help = "print a model's metadata (input size, thresholds, precision, provenance)"
    description = (
        "Read the ffrt metadata stored inside an .onnx model, or in the .json sidecar of a "
        "TensorRT engine (.engine/.plan/.trt), and print it. Loads no weights and needs no "
        "inference backend (nor TensorRT for an engine)."
    )

    def add_args(self, parser):
        parser.add_argument("model", metavar="MODEL", help="an .onnx model exported by ffexport, or a TensorRT engine with its sidecar")
        parser.add_argument("--json", action="store_true", help="print the raw metadata as JSON instead (for an engine: its whole sidecar)")
        parser.add_argument(
            "--config", action="store_true",
            help="print, as JSON, the Detector settings (DetectorConfig) that detect and run would use with the "
            "options below, checked but without loading the model",
        )
        settings = parser.add_argument_group("Detector settings (with --config)")
        add_inference_args(settings)
        add_limit_args(settings)

    def run(self, args):
        from ffcore.files import ENGINE_SUFFIXES
        from .metafile import read_onnx_meta

        if args.config:
            print(detector_config(args).model_dump_json(indent=2))
            return 0
        if Path(args.model).suffix.lower() in ENGINE_SUFFIXES:
            # A plan is opaque bytes: what describes it is the sidecar written with it.
            from .tensorrt.plan import read_engine_info

            info = read_engine_info(args.model)
            if args.json:
                print(json.dumps(info.model_dump(mode="json"), indent=2))
            else:
                print(format_meta(info.meta, args.model))
                print(format_engine(info))
            return 0
        meta = read_onnx_meta(args.model)
        if args.json:
            print(json.dumps(meta.model_dump(mode="json"), indent=2))
        else:
            print(format_meta(meta, args.model))
        return 0


def format_engine(info) -> str:
    p = info.profile
    return "\n".join([
        f"engine:       TensorRT {info.tensorrt_version}, {info.gpu_name} (compute capability {info.compute_capability}), "
        f"{info.precision}{', strongly typed' if info.strongly_typed else ''}",
        f"batch:        profile min {p.min}, opt {p.opt}, max {p.max}",
        f"built from:   ONNX sha256 {info.onnx_sha256}",
        f"built at:     {info.built_at}",
    ])


def format_meta(meta, path) -> str:
    i, t, s = meta.input, meta.thresholds, meta.score
    lines = [
        f"model:        {path}",
        f"input:        {i.name!r} {i.dtype} {i.layout} [N, {i.height}, {i.width}, {i.channels}], "
        f"{i.color_order}; images are resized to {i.width}x{i.height} (w x h) with '{i.resize_interpolation}'",
        "colour:       " + ("luma: the graph reads BT.601 luminance only (trained on grey images)"
                            if i.color == "luma" else "rgb: the graph reads all three channels"),
        f"normalize:    mean {_floats(i.mean)}, std {_floats(i.std)} (inside the graph)",
        f"outputs:      anomaly_map {meta.outputs.anomaly_map!r} [N, 1, {i.height}, {i.width}], score {meta.outputs.score!r} [N]",
        f"score:        {s.reduction}"
        + (f" (top {s.topk_fraction:g} of pixels)" if s.topk_fraction else "")
        + (f" of the map fused from strides {', '.join(map(str, s.strides))} only" if s.strides else "")
        + (f", plus a memory bank's nearest-patch distance (stride {s.memory_bank.stride}, {s.memory_bank.vectors} "
           f"normal patches, weight {s.memory_bank.weight:g} in the score, {s.memory_bank.map_weight:g} in the map)"
           if s.memory_bank else "")
        + f", higher = more anomalous; map units: {s.map_units}",
        f"thresholds:   image {t.image:.6g}, pixel {t.pixel:.6g}" + (f"  ({t.source})" if t.source else ""),
    ]
    lines += [f"  {which}: {estimate.point(value).summary()}" for which, estimate, value in
              (("image", t.image_estimate, t.image), ("pixel", t.pixel_estimate, t.pixel)) if estimate is not None]
    if meta.score_stats:
        st = meta.score_stats
        lines.append(
            f"normal scores: n={st.count} mean {st.mean:.6g} std {st.std:.6g} min {st.min:.6g} "
            f"p50 {st.p50:.6g} p99 {st.p99:.6g} max {st.max:.6g}"
        )
    lines += [
        f"precision:    {meta.precision} (target: {meta.target})",
        f"batch_max:    {meta.batch_max if meta.batch_max is not None else 'not set'}",
        f"backbone:     {meta.backbone.name} ({'pretrained' if meta.backbone.pretrained else 'RANDOM weights: test model'})",
        f"model kind:   {meta.model.kind}"
        + (f" (couplings conditioned on a {meta.model.condition_channels}-channel positional encoding)"
           if meta.model.condition_channels else ""),
        f"flow:         {meta.flow.steps} steps, hidden ratio {meta.flow.hidden_ratio:g}"
        f"{'' if meta.flow.hidden_channels is None else ' (hidden channels ' + ', '.join(map(str, meta.flow.hidden_channels)) + ')'}, "
        f"{_kernels(meta)}, clamp {meta.flow.clamp:g}; "
        + (f"features averaged over {meta.flow.feature_pooling}x{meta.flow.feature_pooling} cells; "
           if meta.flow.feature_pooling > 1 else "")
        + f"feature strides {', '.join(map(str, meta.feature_strides))}",
        "augmentation: " + (meta.augmentation.summary() if meta.augmentation else "not recorded"),
        *([f"head:         {meta.head_fit}"] if meta.head_fit else []),
        *[f"gate:         {g.summary()}; {g.runtime}, {g.checked_at}" for g in meta.precision_gates],
        f"opset:        {meta.opset if meta.opset is not None else 'not recorded'}",
        f"checkpoint:   sha256 {meta.source_checkpoint_sha256}",
        f"created:      {meta.created_at}",
        f"schema:       {meta.format} v{meta.schema_version}",
    ]
    if meta.tool_versions:
        lines.append("tools:        " + ", ".join(f"{k} {v}" for k, v in sorted(meta.tool_versions.items())))
    return "\n".join(lines)


def _floats(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _kernels(meta) -> str:
    if meta.model.kind == "cflow":  # fully connected over channels: 1x1 convolutions in the graph
        return "1x1"
    return "3x3 only" if meta.flow.conv3x3_only else "3x3/1x1"


class DetectTool(Tool):
    name = "detect"
    help = "run a model on image files and print PASS/FAIL per image"
    description = (
        "Run MODEL on each image (files, or the image files inside folders) and print one "
        "line per image: path, score, PASS/FAIL (FAIL = score above the image threshold). "
        "Ends with a latency/FPS summary. The latency covers preprocessing, inference and "
        "postprocessing; reading and decoding the files is not included, as on a line where "
        "frames arrive from the camera in memory. Unreadable or refused images (corrupt, "
        "above --max-pixels, below --min-side) are reported and skipped; the exit code is then 1. "
        "Folder entries that are not image files are listed as skipped. Output paths are "
        "checked before the first image; the --json report is written at the start, rewritten "
        "while the run goes and at its end; Ctrl-C stops the run, writes the report of the "
        "images done so far (status 'interrupted') and exits with 130."
    )

    def add_args(self, parser):
        parser.add_argument("model", metavar="MODEL", help="an .onnx model exported by ffexport")
        parser.add_argument(
            "images", metavar="IMAGE_OR_DIR", nargs="+",
            help=f"image files, or folders whose image files ({', '.join(IMAGE_SUFFIXES)}) are all checked, in name order",
        )
        inputs = parser.add_argument_group("input")
        inputs.add_argument("-r", "--recursive", action="store_true", help="also look for images in sub-folders of each folder")
        inputs.add_argument(
            "--color-order", choices=("BGR", "RGB"), default="BGR", type=str.upper,
            help="channel order of the pixel data in the files. Standard image files decode as BGR (default). "
            "Use RGB only for files whose red and blue were swapped when written (e.g. an RGB array saved "
            "with cv2.imwrite)",
        )
        add_limit_args(inputs)
        add_inference_args(parser.add_argument_group("inference"))
        out = parser.add_argument_group("output")
        out.add_argument(
            "--json", metavar="FILE", type=Path,
            help="also write every result, the skipped entries and the latency summary to FILE as JSON; written "
            "atomically at the start, while the run goes and at its end ('status': running / complete / "
            "interrupted / failed)",
        )
        out.add_argument(
            "--overlays", metavar="DIR", type=Path,
            help="write one PNG per image into DIR: heatmap of the anomaly map over the image, defect mask outlined in white, verdict and score in the corner",
        )
        out.add_argument(
            "--html", metavar="FILE", type=Path,
            help="at the end, write the threshold review page of the scored images (one self-contained HTML file: "
            "scores, a threshold slider, the parts that flip with their maps)",
        )

    def run(self, args):
        from .detector import Detector
        from .errors import InferenceError
        from ffcore.files import atomic_write_bytes
        from .preprocess import read_image_file
        from .runreport import RunReport, check_output_dir, check_output_file, collect_images

        listing = collect_images(args.images, args.recursive)
        # Outputs first: a report that cannot be written must fail now, not after the last image.
        if args.json:
            check_output_file(args.json, "--json")
        if args.overlays:
            check_output_dir(args.overlays, "--overlays")
        if args.html:
            from .review import check_page_path

            check_page_path(args.html)
        det = Detector(args.model, detector_config(args))
        for p in listing.problems:
            print(f"ffrt: error: {p}", file=sys.stderr)
        for p, why in listing.skipped:
            print(f"ffrt: skipped {p}: {why}", file=sys.stderr)
        t = det.thresholds
        header = {
            "model": str(args.model), "backend": det.backend_description,
            "thresholds": {"image": t.image, "pixel": t.pixel, "source": t.source},
        }
        report = RunReport(args.json, header, listing.skipped, listing.problems)
        report.write("running", det.stats.model_dump())

        paths = listing.paths
        width = min(60, max((len(str(p)) for p in paths), default=0))
        records, failed, overlay_names = report.images, len(listing.problems), set()
        status = "interrupted"
        stop = _Stop()
        try:
            with terminate_as_interrupt(stop):
                for path in paths:
                    try:
                        image = read_image_file(path, det.limits, det.meta.input)
                        r = det(image)
                    except (InvalidImageError, InferenceError) as e:  # InvalidImageError includes ImageFileError
                        failed += 1
                        report.add({"path": str(path), "error": str(e)}, lambda: det.stats.model_dump())
                        print(f"ffrt: error: {e if isinstance(e, ImageFileError) else f'{path}: {e}'}", file=sys.stderr)
                        continue
                    verdict = "FAIL" if r.is_anomalous else "PASS"
                    record = {
                        "path": str(path), "score": json_float(r.score), "is_anomalous": r.is_anomalous,
                        "defect_pixels": int(r.mask.sum()), "latency_ms": round(r.latency_ms, 3),
                    }
                    if args.overlays:
                        record["overlay"] = str(write_overlay(args.overlays, path, image, r, overlay_names, atomic_write_bytes))
                    report.add(record, lambda: det.stats.model_dump())
                    print(f"{str(path):<{width}}  score {r.score:>10.5g}  {verdict}", flush=True)
            status = "complete"
        except KeyboardInterrupt:
            pass  # status stays "interrupted": the summary and the report of what was done follow
        except BaseException:
            report.write("failed", det.stats.model_dump())
            raise

        stats = det.stats
        done = len(records) - sum("error" in r for r in records)
        fails = sum(bool(r.get("is_anomalous")) for r in records)
        print(f"{done} image{'s' if done != 1 else ''}: {fails} FAIL, {done - fails} PASS" + (f", {failed} unreadable" if failed else ""))
        print(f"latency: {stats}")
        print(f"backend: {det.backend_description}")
        if listing.skipped:
            n = len(listing.skipped)
            print(f"skipped {n} folder entr{'ies' if n != 1 else 'y'} that {'are' if n != 1 else 'is'} not image files (listed above)")
        report.write(status, stats.model_dump())
        if args.html and status == "complete" and done:
            from .review.fromrecords import write_records_page

            print(f"review page: {write_records_page(args.html, det, records, ' '.join(map(str, args.images)))}")
        if status == "interrupted":
            where = f"; the report of the {len(records)} image(s) done is in {args.json}" if args.json else ""
            how = "stopped by SIGTERM" if stop.signum else "interrupted"
            print(f"ffrt: {how} after {len(records)} of {len(paths)} images{where}", file=sys.stderr)
            return 128 + (stop.signum or signal.SIGINT)
        if failed:
            print(f"ffrt: error: {failed} of {failed + done} images could not be processed (see above)", file=sys.stderr)
            return 1
        return 0


class _Stop:
    signum: int = 0  # the signal that stopped the run (0: none, or Ctrl-C's KeyboardInterrupt)


@contextlib.contextmanager
def terminate_as_interrupt(stop: _Stop):
    """SIGTERM (what systemd, docker stop and kill send) stops the run the way Ctrl-C does:
    the loop ends, the report is finalised as "interrupted" with what was done. Without
    this, Python dies on SIGTERM at once and leaves the report at "running"."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a caller's thread keeps its own
        return

    def handler(signum, frame):
        stop.signum = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_overlay(folder: Path, path: Path, image, result, used: set, write_bytes) -> Path:
    from .overlay import overlay_png

    # Same stem from two folders (a/1.png, b/1.png) must not overwrite each other.
    name, k = f"{path.stem}.png", 1
    while name in used:
        name, k = f"{path.stem}_{k}.png", k + 1
    used.add(name)
    out = folder / name
    write_bytes(out, overlay_png(image, result))
    return out


class BackendsTool(Tool):
    name = "backends"
    help = "list the inference backends and whether each can run on this machine"
    description = "List every backend in the order backend='auto' tries them, and why any is unavailable here."

    def add_args(self, parser):
        pass

    def run(self, args):
        from .backends import availability

        for name, reason in availability().items():
            print(f"{name:<22} {'available' if reason is None else 'unavailable: ' + reason}")
        return 0


class DoctorTool(Tool):
    name = "doctor"
    help = "what this machine has for the GPU path (driver, GPUs, CUDA, TensorRT, onnxruntime) and which backends run"
    description = (
        "Print, in one screen, the NVIDIA driver and GPUs (through cuda-python or pycuda), the pip-installed CUDA "
        "libraries, the TensorRT bindings and the libnvinfer they load (and whether TensorRT starts on the GPU), "
        "onnxruntime and the libnvinfer its TensorRT provider links, then every backend and why it cannot run; "
        "with MODEL.onnx, whether TensorRT 10 can build that graph, every finding named by node. "
        "Builds and runs nothing."
    )

    def add_args(self, parser):
        parser.add_argument("model", nargs="?", type=Path,
                            help="also check whether TensorRT 10 can build this ONNX graph (operators, types, uint8 "
                            "only into Cast, TopK K, dynamic dimensions); exit 1 and every finding when it cannot")
        parser.add_argument("--device", type=int, default=0, help="GPU index to check TensorRT on (default 0)")

    def run(self, args):
        from .doctor import model_report, report

        print(report(args.device))
        if args.model is None:
            return 0
        text, ok = model_report(args.model)
        print()
        print(text)
        return 0 if ok else 1


TOOLS: tuple[Tool, ...] = (InfoTool(), DetectTool(), BackendsTool(), DoctorTool())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ffrt",
        description="FastFlow anomaly detection runtime: inspect models and run them on images.",
        epilog="Run 'ffrt COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"ffrt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr (e.g. why 'auto' chose its backend)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Imported here: their modules import Tool from this one.
    from .line.cli import RunTool
    from .triton.cli import ServeTool, TritonRepoTool

    for tool in TOOLS[:2] + (RunTool(),) + TOOLS[2:] + (TritonRepoTool(), ServeTool()):
        p = sub.add_parser(tool.name, help=tool.help, description=tool.description)
        tool.add_args(p)
        p.set_defaults(tool=tool)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.tool.run(args)
    except (FFRTError, OSError) as e:  # OSError: e.g. --json/--overlays not writable
        # One line, even for multi-line messages (metadata validation lists each field).
        print("ffrt: error: " + " ".join(line.strip() for line in str(e).splitlines()), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ffrt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
