"""FP16: a mixed-precision ONNX whose precision TensorRT compiles as written.

"Precision is decided in the ONNX, TensorRT only compiles it" (DESIGN.md): TensorRT 10
deprecates and 11 removes the FP16 builder flag, so a strongly typed network runs each
tensor in the type the ONNX gives it. This module writes that ONNX:

* backbone, LayerNorms and flow convolutions in FP16 (where the FLOPs are);
* the anomaly head in FP32: z*z, the channel mean, the scaling, the bilinear Resize,
  the scale fusion and the TopK score. ``0.5 * mean_c z^2`` of a defect can exceed
  FP16's 65504 (|z| > 256 already overflows the square), and a saturated map makes every
  defect score ``inf``;
* input ``image`` uint8 and outputs float32 with names and shapes unchanged
  (``keep_io_types``), so the runtime does not care which variant it loads.

The conversion is onnxconverter-common's ``convert_float_to_float16`` (the maintained
converter; the graph is not hand-rewritten), applied with ``keep_io_types`` to the body
cut at the head boundary, and the original FP32 head nodes re-attached: its
``node_block_list`` on the whole graph left FP16 round trips *inside* the blocked head
(see :func:`to_mixed_fp16`). The only node the converter's block list still gets is our
uint8->float input Cast (a converter bug, see :func:`_float_casts`). The head boundary is
found structurally, not by node names (which change between torch versions): every
``Mul(z, z)`` (both inputs the same tensor) or ``Pow(z, 2)`` starts the head, and every
node downstream of one of them stays FP32. Export fails if no such node exists.

On CPU (measured with onnxruntime 1.32, x86): the CPU execution provider has no FP16
kernel for most ops of this graph (Conv, Clip, Mul, Add, Div, Sub, Concat, Gather, LayerNormalization;
:func:`cpu_fp16_coverage` lists them). Its InsertCastTransformer computes those in FP32 and
removes the casts *between* such nodes ("InsertedPrecisionFreeCast"), so running the FP16
file on a CPU rounds the weights to FP16 but hardly any activations: alone it would
understate the FP16 error and hide overflows. The CPU check therefore also runs
:func:`emulate_fp16_storage` (FP32 math, every activation of the FP16 part rounded to FP16
through explicit casts, overflow to inf included) and reports the worse of the two.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from ffcore.metrics import roc_auc, spearman  # noqa: F401  (spearman re-exported for callers)
from ffcore.ort import make_session

#: Parity tolerances of FP16 vs FP32 on real images (checked by ffexport --fp16).
#: FP16 keeps ~3 decimal digits per activation; through ~40 convolutions that gives
#: ~0.1-1 % relative error on the map. The ranking of parts must survive it.
FP16_MIN_SPEARMAN = 0.99  # score rank correlation
FP16_MAX_AUROC_DIFF = 0.01  # |AUROC(fp16) - AUROC(fp32)| on real labelled images
FP16_MAX_MAP_REL = 0.02  # max |map16 - map32| / max |map32|

FP16_SUFFIX = ".fp16.onnx"


class PrecisionError(RuntimeError):
    """The FP16 conversion cannot be done; the message says why."""


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name (the block list is by name)."""
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = f"ffexport_node_{i}_{node.op_type}"
        seen.add(node.name)


def _is_square(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    if node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]:
        return True
    if node.op_type == "Pow" and len(node.input) == 2 and node.input[1] in consts:
        return bool(np.all(consts[node.input[1]] == 2))
    return False


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that must stay FP32: every square of z and all downstream of it.

    Nodes must be named (see :func:`_name_nodes`).
    """
    graph = model.graph
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    seeds = [n for n in graph.node if _is_square(n, consts)]
    if not seeds:
        raise PrecisionError(
            "no z*z node found in the graph (the anomaly head's square of the flow output); "
            "cannot tell where FP16 must stop. Was the model exported by this ffexport?"
        )
    keep: dict[str, onnx.NodeProto] = {}
    queue = deque(seeds)
    while queue:
        node = queue.popleft()
        if node.name in keep:
            continue
        keep[node.name] = node
        for out in node.output:
            queue.extend(consumers.get(out, []))
    # Shape-only helpers feeding head nodes (Concat of Resize sizes, etc.) are int64 and
    # untouched by the converter; nothing else to add.
    return list(keep)


def _float_casts(graph: onnx.GraphProto) -> list[str]:
    # onnxconverter-common retypes a Cast's output in value_info but leaves its ``to``
    # attribute at FLOAT (our uint8 -> float input cast), which ORT rejects as a type
    # error. Blocking those Casts makes the converter add a Cast-to-FP16 after them.
    return [
        n.name for n in graph.node
        if n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)
    ]


def _convert(model: onnx.ModelProto, op_block_list: list[str]) -> onnx.ModelProto:
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # "the float32 number ... will be truncated": tiny weights (<1e-7) flushed, expected.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=_float_casts(model.graph), op_block_list=op_block_list
        )


def to_mixed_fp16(model: onnx.ModelProto, block_head: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """FP32 ModelProto -> mixed FP16 ModelProto (a copy), and the FP32-kept node names.

    How: the *body* (every node upstream of the head) is cut out as a model of its own
    whose outputs are the tensors the head reads (z of each scale, shapes), converted with
    ``convert_float_to_float16(keep_io_types=True)`` (so z comes out as FP32 through one
    Cast per scale), and the original FP32 head nodes are attached to it unchanged.

    Why not simply ``node_block_list=head`` on the whole graph: with onnxconverter-common
    1.14-1.16 a *chain* of blocked nodes gets a Cast-to-FP16 / Cast-to-FP32 round trip
    after every blocked node whose output has value_info (measured on our graph: the
    ``0.5 * mean`` tensor was stored FP16 between two FP32 head nodes, and with
    keep_io_types the ``anomaly_map`` output was retyped FP16), which is exactly the
    FP16 storage of the head we must avoid.

    ``block_head=False`` gives the naive all-FP16 graph (no blocked nodes, empty op block
    list, FP32 I/O): tests use it to show the overflow the head split prevents; never ship it.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    _name_nodes(proto.graph)
    if not block_head:
        naive = _convert(proto, [])
        # keep_io_types bug: a graph output that is also read inside the graph
        # (anomaly_map -> TopK) keeps its FP32 name in the reader; point it at the FP16 value.
        outs = {o.name for o in naive.graph.output}
        pre = {n.output[0]: n.input[0] for n in naive.graph.node if n.op_type == "Cast" and n.output[0] in outs}
        for n in naive.graph.node:
            if n.op_type == "Cast" and n.output[0] in outs:
                continue
            for i, t in enumerate(n.input):
                if t in pre:
                    n.input[i] = pre[t]
        return naive, []

    head_names = head_nodes(proto)
    head_set = set(head_names)
    graph = proto.graph
    head = [n for n in graph.node if n.name in head_set]
    body = [n for n in graph.node if n.name not in head_set]
    produced_by_body = {o for n in body for o in n.output}
    # Constant nodes feeding the head are copied into the head in FP32 (the converter
    # would turn float Constants of the body into FP16).
    const_nodes = {o: n for n in body if n.op_type == "Constant" for o in n.output}
    head_const: list[onnx.NodeProto] = []
    body_outputs: list[str] = []
    for n in head:
        for i, t in enumerate(n.input):
            if t in const_nodes:
                c = onnx.NodeProto()
                c.CopyFrom(const_nodes[t])
                c.name = f"{c.name}_fp32_for_{n.name}"
                c.output[0] = f"{t}_fp32_for_{n.name}"
                head_const.append(c)
                n.input[i] = c.output[0]
            elif t in produced_by_body and t not in body_outputs:
                body_outputs.append(t)

    # Shapes of the cut tensors, for the body model's outputs.
    inferred = onnx.shape_inference.infer_shapes(proto)
    vinfo = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    missing = [t for t in body_outputs if t not in vinfo]
    if missing:
        raise PrecisionError(f"cannot infer the type of {', '.join(missing)} (the tensors the FP32 head reads)")

    body_model = onnx.ModelProto()
    body_model.CopyFrom(proto)
    del body_model.graph.node[:]
    body_model.graph.node.extend(body)
    del body_model.graph.output[:]
    body_model.graph.output.extend(vinfo[t] for t in body_outputs)
    del body_model.graph.value_info[:]
    used = {t for n in body for t in n.input}
    kept_inits = [t for t in proto.graph.initializer if t.name in used]
    del body_model.graph.initializer[:]
    body_model.graph.initializer.extend(kept_inits)
    body16 = _convert(body_model, [])

    # Reassemble: FP16 body (its outputs now FP32 through Casts) + original FP32 head.
    out = onnx.ModelProto()
    out.CopyFrom(body16)
    g = out.graph
    g.node.extend(head_const + head)
    del g.output[:]
    g.output.extend(proto.graph.output)
    body_init = {t.name: t.data_type for t in g.initializer}
    for t in proto.graph.initializer:
        if any(t.name in n.input for n in head):
            if t.name in body_init and body_init[t.name] != t.data_type:  # body made it FP16: FP32 copy
                copy = onnx.TensorProto()
                copy.CopyFrom(t)
                copy.name = f"{t.name}_fp32"
                for n in head:
                    for i, name in enumerate(n.input):
                        if name == t.name:
                            n.input[i] = copy.name
                g.initializer.append(copy)
            elif t.name not in body_init:  # head-only initializer
                g.initializer.append(t)
    kept = {v.name: v for v in g.value_info}
    del g.value_info[:]
    g.value_info.extend(kept.values())
    return out, head_names


def emulate_fp16_storage(model: onnx.ModelProto, head_names: list[str] | None) -> onnx.ModelProto:
    """An FP32 graph that rounds like FP16 storage: for CPU checks that ORT cannot fudge.

    onnxruntime's CPU EP lacks FP16 kernels for most ops on x86; its InsertCastTransformer
    then runs whole FP16 regions in FP32 and drops the casts between them
    ("InsertedPrecisionFreeCast_*" in the optimized graph), so running the FP16 file on a
    CPU rounds the weights but hardly any activations. This graph makes the rounding
    explicit instead: float weights of the FP16 part rounded to FP16 (as the converter
    does, clamped to +-1e4 like it), and every float tensor the FP16 part produces passed
    through Cast(FP16) -> Cast(FP32) (values above 65504 become inf, as in FP16 storage).
    Math inside a node stays FP32, like TensorRT's FP16 tactics that accumulate in FP32.
    Run it with graph optimizations disabled so the explicit casts survive.

    ``head_names``: the nodes kept FP32 (None = naive: every node rounds its outputs).
    """
    from onnx import helper

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    _name_nodes(proto.graph)
    keep = set(head_names or [])
    g = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    head_inputs = {t for n in g.node if n.name in keep for t in n.input}
    for t in g.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and t.name not in head_inputs:
            a = onnx.numpy_helper.to_array(t)
            a = np.clip(a, -1e4, 1e4).astype(np.float16).astype(np.float32)
            t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
    outputs = {o.name for o in g.output}
    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        nodes.append(n)
        if n.name in keep or n.op_type in ("Shape", "Constant"):
            continue
        for i, t in enumerate(n.output):
            if types.get(t) != onnx.TensorProto.FLOAT or t in outputs:
                continue
            raw = f"{t}__fp32_math"
            n.output[i] = raw
            nodes.append(helper.make_node("Cast", [raw], [f"{t}__fp16"], to=onnx.TensorProto.FLOAT16, name=f"{n.name}__to16_{i}"))
            nodes.append(helper.make_node("Cast", [f"{t}__fp16"], [t], to=onnx.TensorProto.FLOAT, name=f"{n.name}__to32_{i}"))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return proto


def fp32_tensors_of_head(model: onnx.ModelProto, head_names: list[str]) -> dict[str, int]:
    """elem_type of every float tensor a head node reads or writes (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    wanted = set(head_names)
    out: dict[str, int] = {}
    for n in model.graph.node:
        if n.name in wanted:
            for t in list(n.input) + list(n.output):
                if types.get(t) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                    out[t] = types[t]
    return out


@dataclass(frozen=True)
class Fp16Report:
    images: int
    spearman: float
    auroc_fp32: float | None
    auroc_fp16: float | None
    map_max_abs: float
    map_max_rel: float
    nonfinite: int
    cast_fallback_ops: tuple[str, ...]

    @property
    def auroc_diff(self) -> float | None:
        if self.auroc_fp32 is None or self.auroc_fp16 is None:
            return None
        return abs(self.auroc_fp16 - self.auroc_fp32)

    @property
    def ok(self) -> bool:
        d = self.auroc_diff
        return (
            self.nonfinite == 0
            and self.spearman >= FP16_MIN_SPEARMAN
            and self.map_max_rel <= FP16_MAX_MAP_REL
            and (d is None or d <= FP16_MAX_AUROC_DIFF)
        )

    def __str__(self) -> str:
        au = (
            f"image AUROC fp32 {self.auroc_fp32:.4f} fp16 {self.auroc_fp16:.4f} (diff {self.auroc_diff:.4f}, tol {FP16_MAX_AUROC_DIFF})"
            if self.auroc_diff is not None
            else "image AUROC: no labelled defects among the images"
        )
        cpu = (
            f"; no FP16 CPU kernel for {', '.join(self.cast_fallback_ops)} (ORT computes them in FP32), so figures "
            "are the worst of the FP16 file on ORT CPU and an FP16-storage emulation"
            if self.cast_fallback_ops
            else ""
        )
        return (
            f"fp16 vs fp32 on {self.images} images: score Spearman {self.spearman:.5f} "
            f"(tol >= {FP16_MIN_SPEARMAN}), {au}, map max abs {self.map_max_abs:.3g} "
            f"(rel {self.map_max_rel:.3g}, tol {FP16_MAX_MAP_REL}), non-finite values {self.nonfinite}"
            f"{cpu}: {'OK' if self.ok else 'FAILED'}"
        )


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Image AUROC (ffcore.metrics.roc_auc); None without both classes."""
    labels = np.asarray(labels).astype(bool)
    return roc_auc(labels, scores) if 0 < labels.sum() < labels.size else None


def _session(path_or_bytes, optimized: Path | None = None, optimize: bool = True):
    # quiet: the converter leaves unused FP32 copies; ORT warns about each
    return make_session(path_or_bytes, optimize=optimize, optimized_path=optimized)


def run_cpu(path_or_bytes, images: np.ndarray, chunk: int = 8, optimize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    sess = _session(path_or_bytes, optimize=optimize)
    name = sess.get_inputs()[0].name
    maps, scores = [], []
    for i in range(0, len(images), chunk):
        m, s = sess.run(None, {name: images[i : i + chunk]})
        maps.append(m)
        scores.append(s)
    return np.concatenate(maps), np.concatenate(scores)


def cpu_fp16_coverage(model: onnx.ModelProto, workdir: Path) -> tuple[str, ...]:
    """Op types of the FP16 graph that onnxruntime CPU has no FP16 kernel for (here).

    ORT's InsertCastTransformer wraps them in Casts named ``InsertedPrecisionFreeCast_*``
    (visible in the graph it saves with optimizations disabled) and computes them in FP32.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    opt = workdir / "ort_inserted_casts.onnx"
    _session(model.SerializeToString(), optimized=opt, optimize=False)
    g = onnx.load(str(opt)).graph
    inserted = {o for n in g.node if n.op_type == "Cast" and n.name.startswith("InsertedPrecisionFreeCast") for o in n.output}
    ops = {n.op_type for n in g.node if n.op_type != "Cast" and any(i in inserted for i in n.input)}
    opt.unlink(missing_ok=True)
    return tuple(sorted(ops))


def _errors(m32, s32, m16, s16):
    finite = bool(np.isfinite(m16).all() and np.isfinite(s16).all())
    err = float(np.abs(m16 - m32).max()) if finite else float("inf")
    return err, int((~np.isfinite(m16)).sum() + (~np.isfinite(s16)).sum())


def compare(fp32_path, fp16_model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray | None,
            workdir: Path, head_names: list[str] | None = None) -> Fp16Report:
    """FP16 vs FP32 on real images (uint8 NHWC RGB), the worst of two CPU runs.

    1. the FP16 file itself on onnxruntime CPU (weights FP16; ops without CPU FP16 kernels
       computed in FP32, see :func:`cpu_fp16_coverage`);
    2. :func:`emulate_fp16_storage`: every activation of the FP16 part rounded to FP16,
       which is what a GPU stores; ORT CPU alone would not show that rounding.
    """
    fp32 = onnx.load(str(fp32_path))
    if head_names is None:
        probe = onnx.ModelProto()
        probe.CopyFrom(fp32)
        _name_nodes(probe.graph)
        head_names = head_nodes(probe)
    m32, s32 = run_cpu(fp32_path, images)
    runs = [
        run_cpu(fp16_model.SerializeToString(), images),
        run_cpu(emulate_fp16_storage(fp32, head_names).SerializeToString(), images, optimize=False),
    ]
    ref = max(float(np.abs(m32).max()), 1e-12)
    worst_err, nonfinite, worst_rho, worst_auc, a32, a16 = 0.0, 0, 1.0, -1.0, None, None
    if labels is not None:
        a32 = auroc(labels, s32)
    for m16, s16 in runs:
        err, bad = _errors(m32, s32, m16, s16)
        worst_err, nonfinite = max(worst_err, err), nonfinite + bad
        worst_rho = min(worst_rho, spearman(s32, np.nan_to_num(s16, nan=np.inf)))
        if a32 is not None:
            a = auroc(labels, np.nan_to_num(s16, nan=np.inf))
            if a16 is None or abs(a - a32) > abs(a16 - a32):
                a16 = a
    return Fp16Report(
        images=len(images),
        spearman=worst_rho,
        auroc_fp32=a32,
        auroc_fp16=a16,
        map_max_abs=worst_err,
        map_max_rel=worst_err / ref,
        nonfinite=nonfinite,
        cast_fallback_ops=cpu_fp16_coverage(fp16_model, workdir),
    )


def write_fp16(fp32_path: str | Path, out: str | Path | None = None) -> tuple[Path, onnx.ModelProto, list[str]]:
    """Read the exported FP32 ONNX, write ``model.fp16.onnx`` next to it (atomically).

    The metadata is the FP32 file's with ``precision="fp16"``.
    """
    from ffcore.files import atomic_write_bytes
    from ffrt.meta import meta_from_proto, set_proto_meta

    fp32_path = Path(fp32_path)
    out = Path(out) if out is not None else fp32_path.with_name(fp32_path.name[: -len(".onnx")] + FP16_SUFFIX)
    model = onnx.load(str(fp32_path))
    meta = meta_from_proto(model, where=str(fp32_path))
    fp16, blocked = to_mixed_fp16(model)
    tool_versions = dict(meta.tool_versions)
    try:
        import importlib.metadata

        tool_versions["onnxconverter-common"] = importlib.metadata.version("onnxconverter-common")
    except Exception:  # pragma: no cover - metadata is informative only
        pass
    set_proto_meta(fp16, meta.model_copy(update={"precision": "fp16", "tool_versions": tool_versions}))
    fp16.producer_name = "ffexport"
    onnx.checker.check_model(fp16)
    atomic_write_bytes(out, fp16.SerializeToString())
    return out, fp16, blocked
