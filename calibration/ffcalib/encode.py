"""One calibration pass and the Q/DQ encodings made from its ranges.

:func:`calibrate` runs the onnxruntime calibrator once (on the backbone subgraph) and keeps
the per-tensor ranges; :func:`encode` writes one target's Q/DQ graph from those ranges, of
the FP32 model or of another FP32 graph of the same network (ffexport's re-fit head), never
calibrating again. See int8.py's docstring for what this relies on in onnxruntime.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ffcore.progress import progress as progress_bar

from .graph import _ensure_node_names, backbone_submodel, find_quantizable_nodes, quantized_node_names
from .images import CalibError

METHODS = ("minmax", "entropy", "percentile")


class _Reader:
    """onnxruntime CalibrationDataReader over a uint8 image array."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int):
        self._name, self._images, self._batch = input_name, images, batch
        self._i = 0

    def get_next(self):
        if self._i >= len(self._images):
            return None
        chunk = self._images[self._i : self._i + self._batch]
        self._i += len(chunk)
        return {self._name: chunk}

    def rewind(self):
        self._i = 0

    def __iter__(self):  # noqa: D105 - some ORT versions iterate the reader
        while (item := self.get_next()) is not None:
            yield item

    def __len__(self):
        return -(-len(self._images) // self._batch)


#: quantize_static settings per target (activation type, weight type, extra_options).
ENCODINGS = {
    # TensorRT explicit quantization: symmetric int8, zero point 0, float bias, and Q/DQ on
    # the *inputs* of each quantized Conv only (TensorRT's placement advice: quantize the
    # inputs of weighted layers, let the builder fuse Conv + activation + the next layer's
    # Q). Quantizing the Conv output too would put a second, coarse Q/DQ on the pre-ReLU6
    # values, whose range is far wider than the [0, 6] the next layer sees.
    "tensorrt": ("QInt8", "QInt8", {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                    "OpTypesToExcludeOutputQuantization": ["Conv"]}),
    # ONNX Runtime x86: uint8 activations with zero points, int8 weights, int32 bias, outputs
    # quantized so ORT fuses QLinearConv; each ReLU6 Clip after a quantized Conv is folded
    # into that Conv's output Q (range [0, 6]-bounded, as TFLite fuses Conv+ReLU6).
    "cpu": ("QUInt8", "QInt8", {"ActivationSymmetric": False, "WeightSymmetric": True}),
}
#: Activation types folded into the preceding quantized Conv in the CPU encoding.
_CPU_FOLDED_ACTIVATIONS = ("Clip", "Relu")


#: Largest |quantized bias| allowed when a float bias may be quantized later (2^30: half of
#: int32, so rounding and accumulation keep clear of the limit).
_BIAS_INT32_HEADROOM = float(2**30)


def protect_float_bias(q_model, fp32_model) -> int:
    """Raise per-channel weight scales so a float Conv bias survives int32 quantization.

    The TensorRT encoding keeps Conv biases in float. ONNX Runtime's graph optimizer
    (``WeightBiasQuantization``, microsoft/onnxruntime PR #22889) nevertheless quantizes
    such a bias to int32 at load time with scale input_scale * weight_scale. BN folding
    leaves "dead" channels (weights ~1e-6, bias ~1-7) whose tiny weight scale makes that
    int32 overflow and saturate, which multiplies the backbone's feature error (figures:
    benchmarks/README.md, "Figures behind the code's defaults"). The quantization tool
    guards its own int32 bias the same way (PR #22020); this does it for the float-bias
    encoding: where |bias| / (s_in * s_w)
    would exceed 2^30 the channel's weight scale is raised to fit and its weights
    re-quantized from the FP32 values (they round to ~0: the channel's output is its bias
    anyway). Returns the number of channels changed.
    """
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in q_model.graph.initializer}
    fp32_weight = {n.name: n.input[1] for n in fp32_model.graph.node if n.op_type == "Conv"}
    fp32_inits = {t.name: t for t in fp32_model.graph.initializer}
    producer = {o: n for n in q_model.graph.node for o in n.output}
    changed = 0
    for conv in q_model.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 3 or conv.input[2] not in inits:
            continue
        dq_x, dq_w = producer.get(conv.input[0]), producer.get(conv.input[1])
        if not (dq_x and dq_w and dq_x.op_type == "DequantizeLinear" and dq_w.op_type == "DequantizeLinear"):
            continue
        bias = inits[conv.input[2]]
        if bias.data_type != TensorProto.FLOAT or dq_x.input[1] not in inits or dq_w.input[1] not in inits:
            continue
        s_x = float(numpy_helper.to_array(inits[dq_x.input[1]]).reshape(-1)[0])
        s_w = numpy_helper.to_array(inits[dq_w.input[1]]).astype(np.float64).reshape(-1)
        b = np.abs(numpy_helper.to_array(bias).astype(np.float64))
        need = b / (s_x * _BIAS_INT32_HEADROOM)
        low = s_w < need
        if not low.any():
            continue
        w_name = fp32_weight.get(conv.name)
        if w_name not in fp32_inits:
            raise CalibError(f"{conv.name}: its FP32 weight is not in the source graph; cannot re-quantize it")
        w = numpy_helper.to_array(fp32_inits[w_name]).astype(np.float64)
        new_scale = np.where(low, need, s_w)
        shape = (-1,) + (1,) * (w.ndim - 1)
        q_old = numpy_helper.to_array(inits[dq_w.input[0]])
        q_new = np.where(low.reshape(shape), np.clip(np.round(w / new_scale.reshape(shape)), -127, 127), q_old)
        inits[dq_w.input[0]].CopyFrom(numpy_helper.from_array(q_new.astype(q_old.dtype), dq_w.input[0]))
        inits[dq_w.input[1]].CopyFrom(numpy_helper.from_array(new_scale.astype(np.float32), dq_w.input[1]))
        changed += int(low.sum())
    return changed


def _encode(src: Path, dst: Path, target: str, cache: Path, nodes, op_types, method_enum, extra_options):
    """One quantize_static call from the cached ranges (no calibration) -> the Q/DQ ModelProto."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    act, weight, target_options = ENCODINGS[target]
    op_types, nodes = list(op_types), list(nodes)
    source = onnx.load(str(src))
    if target == "cpu":
        producer = {o: n for n in source.graph.node for o in n.output}
        chosen = set(nodes)
        folded = [n for n in source.graph.node if n.op_type in _CPU_FOLDED_ACTIVATIONS
                  and (p := producer.get(n.input[0])) is not None and p.name in chosen]
        op_types += sorted({n.op_type for n in folded} - set(op_types))
        nodes += [n.name for n in folded]
    ort_logger = logging.getLogger()
    level = ort_logger.level
    ort_logger.setLevel(logging.ERROR)  # "consider pre-processing": the export is already optimized
    try:
        quantize_static(
            str(src),
            str(dst),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=True,
            reduce_range=False,
            nodes_to_quantize=nodes,
            calibrate_method=method_enum,
            calibration_cache_path=str(cache),
            activation_type=getattr(QuantType, act),
            weight_type=getattr(QuantType, weight),
            extra_options={**(extra_options or {}), **target_options},
        )
    finally:
        ort_logger.setLevel(level)
    q = onnx.load(str(dst))
    protect_float_bias(q, source)
    return q


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise CalibError(f"calibration method must be one of {', '.join(METHODS)}, not {method!r}")
    return table[method]


@dataclass
class Calibration:
    """The one calibration pass of an FP32 model: what :func:`encode` needs, and its figures."""

    fp32_path: Path | None  # None: calibrated from an in-memory graph
    model: object  # the FP32 ModelProto, every node named
    nodes: list[str]  # names of the nodes to quantize
    op_types: tuple[str, ...]
    method: str
    ranges_json: bytes  # onnxruntime's save_tensors_data, read back by quantize_static
    images: int
    seconds: float


def calibrate(
    fp32_onnx_path,
    images: np.ndarray,
    *,
    method: str = "minmax",
    op_types: Sequence[str] = ("Conv",),
    scope: str = "backbone",
    nodes: Sequence[str] | None = None,
    batch: int = 8,
    progress: bool = True,
) -> Calibration:
    """Run the calibrator once over ``images`` (uint8 NHWC at the model size) and keep the ranges.

    ``fp32_onnx_path``: a path, or an FP32 ModelProto (e.g. ffexport's graph with a re-fit head;
    it is not changed).

    op_types, scope: which nodes get Q/DQ ("backbone" = upstream of the LayerNorms, "all");
    ``nodes`` names them explicitly instead (calibration still runs on the ``scope`` subgraph).
    """
    import onnx
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    method_enum = _method_enum(method)
    op_types = tuple(op_types)
    if isinstance(fp32_onnx_path, onnx.ModelProto):
        model, fp32_path = onnx.ModelProto.FromString(fp32_onnx_path.SerializeToString()), None
    else:
        model, fp32_path = onnx.load(str(fp32_onnx_path)), Path(fp32_onnx_path)
    _ensure_node_names(model)
    nodes = list(nodes) if nodes else find_quantizable_nodes(model, op_types, scope)
    input_name = model.graph.input[0].name
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ffcalib.") as tmp:
        tmp = Path(tmp)
        # Only the backbone needs ranges: calibrate its subgraph (input -> LayerNorm inputs).
        calib_model = tmp / "calib.onnx"
        onnx.save(backbone_submodel(model) if scope == "backbone" else model, str(calib_model))
        calibrator = create_calibrator(
            calib_model,
            list(op_types) + [t for t in _CPU_FOLDED_ACTIVATIONS if t not in op_types],
            augmented_model_path=str(tmp / "augmented.onnx"),
            calibrate_method=method_enum,
            extra_options={"symmetric": False},
        )
        # Fed in chunks of a few batches: each collect_data call reduces what it saw into the
        # running ranges / histograms and frees the intermediate outputs (its
        # max_intermediate_outputs option drops data instead of merging it in ORT 1.32), so
        # memory stays bounded whatever the image count.
        step = batch * 2
        for i in progress_bar(range(0, len(images), step), desc="calibrating", unit="chunk", enabled=progress):
            calibrator.collect_data(_Reader(input_name, images[i : i + step], batch))
        ranges = calibrator.compute_data()
        del calibrator
        cache = tmp / "calibration.json"
        save_tensors_data(ranges, cache)
        ranges_json = cache.read_bytes()
    return Calibration(fp32_path, model, nodes, op_types, method, ranges_json, len(images),
                       time.perf_counter() - t0)


def encode(cal: Calibration, target: str, source=None, extra_options: dict | None = None):
    """The ``target`` ("tensorrt" | "cpu") Q/DQ ModelProto from ``cal``'s ranges, without calibrating.

    ``source``: another FP32 ModelProto of the same network (ffexport's graph with a re-fit
    flow head) to put the same Q/DQ on; None = the calibrated FP32 model. Raises CalibError
    when ``source``'s backbone does not carry the calibrated node names.
    """
    import onnx

    if target not in ENCODINGS:
        raise CalibError(f"target must be one of {', '.join(ENCODINGS)}, not {target!r}")
    with tempfile.TemporaryDirectory(prefix="ffcalib.") as tmp:
        tmp = Path(tmp)
        src = tmp / "fp32.onnx"
        if source is None:
            onnx.save(cal.model, str(src))
        else:
            source = onnx.ModelProto.FromString(source.SerializeToString())
            _ensure_node_names(source)
            onnx.save(source, str(src))
        cache = tmp / "calibration.json"
        cache.write_bytes(cal.ranges_json)
        q = _encode(src, tmp / f"{target}.onnx", target, cache, cal.nodes, cal.op_types, _method_enum(cal.method),
                    extra_options)
    if source is not None and set(quantized_node_names(q, cal.op_types)) != set(cal.nodes):
        raise CalibError(
            "the graph with the re-fitted head does not have the quantized backbone's node names; "
            "export it with the same ffexport version as the FP32 model"
        )
    return q


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
