"""A Triton Inference Server model repository for an exported ffrt model.

    DIR/
      ffrt_model/                    the fused graph, run by Triton's ONNX Runtime backend
        config.pbtxt                 platform "onnxruntime_onnx"; tensors named and typed as the graph
        1/model.onnx
      ffrt_detector/                 what line software calls: image in, ffrt.Result out
        config.pbtxt                 backend "python"; thresholds as parameters (re-tunable)
        1/model.py                   imports ffrt's own TritonPythonModel (ffrt.triton.python_model)
        1/ffrt_meta.onnx             the model's metadata (no graph)

Layout rules followed (Triton's "Model Repository" guide,
https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_repository.md):
one folder per model named as the model, its config.pbtxt beside numeric version folders,
ONNX Runtime's default model file name ``model.onnx`` and the Python backend's ``model.py``.
Config fields follow model_configuration.md of the same repository (max_batch_size and dims
without the batch dimension; ``reshape: { shape: [ ] }`` for the per-image score, whose
graph shape is [N]; dynamic_batching; instance_group). This module writes the text itself:
the runtime does not depend on tritonclient; the tests parse every file with Triton's own
ModelConfig protobuf.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ffcore.files import write_all_or_none

from ..errors import InvalidArgumentError, ModelFileError
from ..meta import ModelMeta
from ..metafile import meta_from_proto, set_proto_meta
from ..regions import check_min_region_px
from . import protocol

#: Default largest batch when the model's metadata records none (the Detector's chunk size).
DEFAULT_MAX_BATCH = 8
DEFAULT_DELAY_US = 2000
#: ONNX TensorProto element types -> Triton data types (the ones an ffrt graph can have).
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL",
                  10: "TYPE_FP16", 11: "TYPE_FP64"}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}

MODEL_PY = f'''"""{protocol.DETECTOR_MODEL}: an ffrt detector on Triton's Python backend (written by ffrt).

The code is ffrt's own (ffrt.triton.python_model): install ffrt into the Python environment
of Triton's Python backend (pip install ffrt). Thresholds and limits are this model's
config.pbtxt parameters; reload the model after editing them.
"""
{{path}}
from ffrt.triton.python_model import TritonPythonModel  # noqa: F401
'''
# ffrt serve runs the ffrt it was started from, wherever that is installed: the Python-backend
# stub's embedded interpreter finds the virtual environment's site-packages but not PYTHONPATH.
CODE_PATH = """
import sys

sys.path[:0] = {paths!r}
"""


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch dimension; -1 = any size
    reshape_scalar: bool = False  # graph shape is [N]: dims [1], reshape to [] for the model


@dataclass(frozen=True)
class Options:
    """What the repository is configured for.

    max_batch:  largest batch Triton forms (<= the model's batch_max).
    delay_us:   dynamic batching: longest a request waits for others to join its batch.
    kind:       "gpu" or "cpu": where ffrt_model's instances run (ffrt_detector's on the CPU).
    instances:  instances of ffrt_model (and of ffrt_detector).
    min_region_px: Result.regions leaves out smaller regions (ffrt.Detector's option).
    """

    max_batch: int | None = None
    delay_us: int = DEFAULT_DELAY_US
    kind: str = "gpu"
    instances: int = 1
    max_pixels: int | None = None
    min_side: int | None = None
    min_region_px: int = 0

    def checked(self, meta: ModelMeta) -> "Options":
        limit = meta.batch_max or DEFAULT_MAX_BATCH
        mb = limit if self.max_batch is None else self.max_batch
        if isinstance(mb, bool) or not isinstance(mb, int) or not 1 <= mb <= limit:
            raise InvalidArgumentError(
                f"max batch must be 1..{limit} (the largest batch this model was exported for), not {mb!r}."
            )
        if isinstance(self.delay_us, bool) or not isinstance(self.delay_us, int) or self.delay_us < 0:
            raise InvalidArgumentError(f"the queue delay must be >= 0 microseconds, not {self.delay_us!r}.")
        if self.kind not in KINDS:
            raise InvalidArgumentError(f"instance kind must be one of {', '.join(KINDS)}, not {self.kind!r}.")
        if isinstance(self.instances, bool) or not isinstance(self.instances, int) or self.instances < 1:
            raise InvalidArgumentError(f"instances must be a positive integer, not {self.instances!r}.")
        check_min_region_px(self.min_region_px)
        return Options(mb, self.delay_us, self.kind, self.instances, self.max_pixels, self.min_side, self.min_region_px)


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """Half and full: a full batch is the cheapest per image, half of it starts sooner under
    moderate load. None for max_batch 1 (nothing to prefer)."""
    return sorted({max(2, max_batch // 2), max_batch}) if max_batch > 1 else []


def graph_tensors(proto) -> tuple[list[Tensor], list[Tensor]]:
    """The graph's inputs and outputs as Triton tensors (batch dimension removed)."""

    def convert(value, where: str) -> Tensor:
        t = value.type.tensor_type
        if t.elem_type not in ONNX_TO_TRITON:
            raise ModelFileError(f"{where} {value.name!r} has ONNX element type {t.elem_type}, which Triton's config cannot name.")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims or dims[0] not in (-1, 0):
            raise ModelFileError(
                f"{where} {value.name!r} has a fixed batch dimension ({dims[:1]}); Triton batches only graphs with a "
                "dynamic first dimension. Re-export the model with ffexport (its graphs have one)."
            )
        rest = tuple(d if d > 0 else -1 for d in dims[1:])
        return Tensor(value.name, ONNX_TO_TRITON[t.elem_type], rest or (1,), reshape_scalar=not rest)

    initializers = {i.name for i in proto.graph.initializer}
    inputs = [convert(v, "input") for v in proto.graph.input if v.name not in initializers]
    outputs = [convert(v, "output") for v in proto.graph.output]
    return inputs, outputs


def _dims(dims) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(t: Tensor, optional: bool = False) -> str:
    lines = [f"    name: {_literal(t.name)}", f"    data_type: {t.data_type}", f"    dims: {_dims(t.dims)}"]
    if t.reshape_scalar:
        lines.append("    reshape: { shape: [ ] }")
    if optional:
        lines.append("    optional: true")
    return "  {\n" + "\n".join(lines) + "\n  }"


def _batching(opts: Options) -> str:
    preferred = preferred_batch_sizes(opts.max_batch)
    lines = ["dynamic_batching {"]
    if preferred:
        lines.append(f"  preferred_batch_size: {_dims(preferred)}")
    lines.append(f"  max_queue_delay_microseconds: {opts.delay_us}")
    return "\n".join(lines + ["}"])


def _literal(text: str) -> str:
    """``text`` as a protobuf text-format string literal that parses back to exactly ``text``.

    Tensor names come from the ONNX file and backend descriptions from the runtime: a quote,
    backslash or line break written raw would end the string early and let the rest of the
    text be read as configuration (more inputs, parameters). protobuf's own escaper is the
    one its parser (and Triton's) reverses."""
    from google.protobuf.text_encoding import CEscape

    return '"' + CEscape(text, as_utf8=True) + '"'


def _parameters(params: dict[str, str]) -> str:
    lines = []
    for key, value in params.items():
        # A parameter is reported on one line (graph_backend is every Result's backend): line
        # breaks become spaces; everything else is kept exactly.
        one_line = value.replace("\n", " ")
        lines.append(f"parameters {{ key: {_literal(key)} value: {{ string_value: {_literal(one_line)} }} }}")
    return "\n".join(lines)


def model_config(inputs: list[Tensor], outputs: list[Tensor], opts: Options) -> str:
    """config.pbtxt of ffrt_model: the fused graph on Triton's ONNX Runtime backend."""
    return "\n".join([
        f'name: "{protocol.GRAPH_MODEL}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {opts.max_batch}",
        "input [\n" + ",\n".join(_tensor_block(t) for t in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t) for t in outputs) + "\n]",
        _batching(opts),
        f"instance_group [ {{ count: {opts.instances} kind: {KINDS[opts.kind]} }} ]",
        "",
    ])


def triton_graph(opts: Options) -> tuple[str, str | None]:
    """(backend, precision) of ffrt_model on a full Triton: its ONNX Runtime backend runs the
    file as encoded (precision None: the metadata's)."""
    return f"Triton {protocol.GRAPH_MODEL}: onnxruntime_onnx, {KINDS[opts.kind]}", None


def detector_parameters(meta: ModelMeta, opts: Options, graph: tuple[str, str | None] | None = None) -> dict[str, str]:
    """ffrt_detector's parameters: the metadata's thresholds (edit and reload the model to
    re-tune: no re-export), the image limits, where the graph is and what runs it (``graph``:
    (backend, precision), reported in every Result; default :func:`triton_graph`)."""
    backend, precision = graph or triton_graph(opts)
    params = {
        "image_threshold": repr(float(meta.thresholds.image)),
        "pixel_threshold": repr(float(meta.thresholds.pixel)),
        "graph_model": protocol.GRAPH_MODEL,
        "graph_max_batch": str(opts.max_batch),
        "graph_backend": backend,
        "graph_precision": precision or meta.precision,
        "min_region_px": str(opts.min_region_px),
    }
    if opts.max_pixels is not None:
        params["max_pixels"] = str(opts.max_pixels)
    if opts.min_side is not None:
        params["min_side"] = str(opts.min_side)
    return params


def detector_pbtxt(meta: ModelMeta, opts: Options, graph: tuple[str, str | None] | None = None) -> str:
    """config.pbtxt of ffrt_detector (Python backend, inputs/outputs of ``protocol``)."""
    inputs = [Tensor(name, spec[0], spec[3]) for name, spec in protocol.INPUTS.items()]
    outputs = [Tensor(name, spec[0], spec[3]) for name, spec in {**protocol.OUTPUTS, **protocol.INFO_OUTPUTS}.items()]
    return "\n".join([
        f'name: "{protocol.DETECTOR_MODEL}"',
        'backend: "python"',
        f"max_batch_size: {opts.max_batch}",
        "input [\n" + ",\n".join(_tensor_block(t, optional=True) for t in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t) for t in outputs) + "\n]",
        _batching(opts),
        f"instance_group [ {{ count: {opts.instances} kind: KIND_CPU }} ]",
        _parameters(detector_parameters(meta, opts, graph)),
        "",
    ])


def meta_onnx_bytes(meta: ModelMeta) -> bytes:
    """The metadata in an ONNX container without a graph (what ffrt's readers open)."""
    import onnx

    proto = onnx.helper.make_model(onnx.helper.make_graph([], "ffrt_meta", [], []), producer_name="ffrt")
    set_proto_meta(proto, meta)
    return proto.SerializeToString()


def detector_files(root: Path, meta: ModelMeta, opts: Options, code_paths: list[str] | None = None,
                   graph: tuple[str, str | None] | None = None) -> dict[Path, bytes]:
    """ffrt_detector's files; ``code_paths``: folders put first on sys.path (ffrt serve);
    ``graph``: (backend, precision) of what runs ffrt_model (default: Triton's ONNX Runtime)."""
    folder = root / protocol.DETECTOR_MODEL
    model_py = MODEL_PY.replace("{path}", CODE_PATH.format(paths=list(code_paths)) if code_paths else "")
    return {
        folder / "config.pbtxt": detector_pbtxt(meta, opts, graph).encode(),
        folder / "1" / "model.py": model_py.encode(),
        folder / "1" / protocol.META_FILE: meta_onnx_bytes(meta),
    }


def load_model(onnx_path: str | os.PathLike):
    """(ModelProto without external data, ModelMeta) of an exported ffrt model."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file.")
    if path.suffix.lower() != ".onnx":
        raise ModelFileError(f"{path}: expected an .onnx model exported by ffexport (Triton's ffrt_model runs the ONNX).")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelFileError(f"{path}: not a readable ONNX file ({type(e).__name__}). Export a model with ffexport.") from e
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise ModelFileError(f"{path}: its weights are in a separate file; ffexport writes one self-contained file: re-export it.")
    return proto, meta_from_proto(proto, where=str(path))


def check_graph(meta: ModelMeta, inputs: list[Tensor], outputs: list[Tensor], where: str) -> None:
    """The graph must be the contract the metadata describes (the Detector relies on it too)."""
    i, names = meta.input, meta.outputs
    want_in = Tensor(i.name, "TYPE_UINT8", (i.height, i.width, 3))
    want_out = {names.anomaly_map: Tensor(names.anomaly_map, "TYPE_FP32", (1, i.height, i.width)),
                names.score: Tensor(names.score, "TYPE_FP32", (1,), reshape_scalar=True)}
    got_out = {t.name: t for t in outputs}
    if inputs != [want_in] or got_out != want_out:
        raise ModelFileError(
            f"{where}: the graph's tensors {[*inputs, *outputs]} are not the ffrt contract (uint8 image "
            f"[N, {i.height}, {i.width}, 3] in; float32 anomaly map [N, 1, H, W] and score [N] out). Re-export it with ffexport."
        )


def write_repository(onnx_path: str | os.PathLike, out: str | os.PathLike, opts: Options = Options()) -> list[Path]:
    """Write (or update) the repository at ``out``; returns the files written.

    Every file is written to a temporary name first and renamed only when all are on disk
    (``write_all_or_none``): a failure leaves a previous repository as it was.
    """
    path = Path(onnx_path)
    proto, meta = load_model(path)
    inputs, outputs = graph_tensors(proto)
    check_graph(meta, inputs, outputs, str(path))
    opts = opts.checked(meta)
    root = Path(out)
    graph = root / protocol.GRAPH_MODEL
    files = {
        graph / "config.pbtxt": model_config(inputs, outputs, opts).encode(),
        graph / "1" / "model.onnx": path.read_bytes(),
        **detector_files(root, meta, opts),
    }
    for folder in {p.parent for p in files}:
        folder.mkdir(parents=True, exist_ok=True)
    write_all_or_none(files)
    return sorted(files)
