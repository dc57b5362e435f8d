"""The FP16 gate: the FP16 file against the FP32 file on real images, on a CPU.

What is compared: the image score's rank correlation, the image AUROC on labelled images,
and the largest map difference relative to the FP32 map's peak (thresholds below);
any non-finite value fails; and at most 1% of the images may change their pass/fail verdict
at the file's image threshold (what a line sees). ``ffexport --fp16`` runs it on validation
data, as the INT8 and BF16 gates do (held-out training normals and synthetic defects drawn on
them; never the test split), and publishes the FP16 file only when the report is OK
(staging.py: all or nothing).

Why the verdict bound: the map bound is relative to the map's peak over the gate images, and
synthetic defects peak far higher than real ones (demo model: ~130 against ~12 for real
cracks), which loosens it on validation data; a verdict that changes is a change a user sees
whatever the peaks (a backbone weight 2% off passes the map bound there and changes one
verdict in 64; genuine FP16 rounding changes none).

On CPU (onnxruntime 1.32, x86): the CPU execution provider has no FP16 kernel for most
ops of this graph (Conv, Clip, Mul, Add, LayerNormalization, ...; :func:`cpu_fp16_coverage`
lists them). Its InsertCastTransformer computes those in FP32 and removes the casts
*between* such nodes ("InsertedPrecisionFreeCast"), so running the FP16 file on a CPU
rounds the weights to FP16 but hardly any activations: alone it would understate the FP16
error and hide overflows. The check therefore also runs :func:`emulate_fp16_storage` (FP32
math, every FP16 tensor of the file rounded to FP16 through explicit casts, overflow to inf
included) and reports the worse of the two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from ffcore.metrics import roc_auc, spearman
from ffcore.ort import make_session
from ffrt.meta import read_onnx_meta
from onnx import TensorProto, helper, numpy_helper

#: Parity tolerances of FP16 vs FP32 on real images (checked by ffexport --fp16), the bounds
#: of every reduced float precision against the same file in FP32 (ffcalib's BF16 gate too).
#: FP16 keeps ~3 decimal digits per activation; through ~40 convolutions that gives
#: ~0.1-1 % relative error on the map. The ranking of parts must survive it.
from ffcalib.bf16 import REDUCED_MAX_AUROC_DIFF as FP16_MAX_AUROC_DIFF  # noqa: E402  |AUROC16 - AUROC32|, labelled images
from ffcalib.bf16 import REDUCED_MAX_MAP_REL as FP16_MAX_MAP_REL  # noqa: E402  max |map16 - map32| / max |map32|
from ffcalib.bf16 import REDUCED_MIN_SPEARMAN as FP16_MIN_SPEARMAN  # noqa: E402  score rank correlation
from ffcalib.bf16 import REDUCED_MAX_VERDICT_CHANGE as FP16_MAX_VERDICT_CHANGE  # noqa: E402  share of verdicts
from ffcalib.bf16 import verdict_changes  # noqa: E402


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
    #: Images whose verdict (score > the FP32 file's image threshold) differs in FP16 (worst run).
    verdict_flips: int = 0
    #: What the images are (e.g. "44 held-out training normals of ... + 44 synthetic defects").
    data: str = ""

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
            and self.verdict_flips <= FP16_MAX_VERDICT_CHANGE * self.images
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
            f"fp16 vs fp32 on {self.images} images{f' ({self.data})' if self.data else ''}: score Spearman "
            f"{self.spearman:.5f} (tol >= {FP16_MIN_SPEARMAN}), {au}, map max abs {self.map_max_abs:.3g} "
            f"(rel {self.map_max_rel:.3g}, tol {FP16_MAX_MAP_REL}), non-finite values {self.nonfinite}, "
            f"verdicts changed at the image threshold {self.verdict_flips} of {self.images} "
            f"(tol {FP16_MAX_VERDICT_CHANGE:.0%})"
            f"{cpu}: {'OK' if self.ok else 'FAILED'}"
        )


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Image AUROC (ffcore.metrics.roc_auc); None without both classes."""
    labels = np.asarray(labels).astype(bool)
    return roc_auc(labels, scores) if 0 < labels.sum() < labels.size else None


def run_cpu(path_or_bytes, images: np.ndarray, chunk: int = 8, optimize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(maps, scores) of an ONNX file (path or serialized bytes) on onnxruntime CPU."""
    sess = make_session(path_or_bytes, optimize=optimize)
    name = sess.get_inputs()[0].name
    maps, scores = [], []
    for i in range(0, len(images), chunk):
        m, s = sess.run(None, {name: images[i : i + chunk]})
        maps.append(m)
        scores.append(s)
    return np.concatenate(maps), np.concatenate(scores)


def _as_fp32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def _retype_attributes(node: onnx.NodeProto) -> None:
    """FP16 dtypes and constants named by a node's attributes (Cast's ``to``, Constant and
    ConstantOfShape values) become FP32; the values are exact, FP16 widens losslessly."""
    for a in node.attribute:
        if a.type == onnx.AttributeProto.INT and a.name in ("to", "dtype") and a.i == TensorProto.FLOAT16:
            a.i = TensorProto.FLOAT
        elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
            a.t.CopyFrom(_as_fp32(a.t))


def emulate_fp16_storage(fp16: onnx.ModelProto) -> onnx.ModelProto:
    """The FP16 file as an FP32 graph that stores like FP16: for CPU checks ORT cannot fudge.

    Driven by the file's own types, not by what its nodes compute: FP16 weights and
    constants are widened to FP32 (exactly), every node computes in FP32, and every tensor
    the file types FP16 is passed through Cast(FP16) -> Cast(FP32) (values above 65504
    become inf, as in FP16 storage). Tensors the file keeps FP32 (the head) are untouched.
    Math inside a node stays FP32, like TensorRT's FP16 tactics that accumulate in FP32.
    Run it with graph optimizations disabled so the explicit casts survive.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(fp16)
    g = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    untyped = [t for n in g.node for t in n.output if t and t not in types]
    if untyped:
        raise ValueError(f"cannot infer the type of {', '.join(untyped[:5])}: the FP16 storage emulation needs every "
                         "tensor's type")
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT16:
            g.initializer[i].CopyFrom(_as_fp32(t))
    nodes: list[onnx.NodeProto] = []
    for i, n in enumerate(g.node):
        _retype_attributes(n)
        nodes.append(n)
        for j, t in enumerate(n.output):
            if types[t] != TensorProto.FLOAT16:
                continue
            raw, half = f"{t}__fp32_math", f"{t}__fp16"
            n.output[j] = raw
            nodes.append(helper.make_node("Cast", [raw], [half], to=TensorProto.FLOAT16, name=f"emulate_{i}_{j}_to16"))
            nodes.append(helper.make_node("Cast", [half], [t], to=TensorProto.FLOAT, name=f"emulate_{i}_{j}_to32"))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return proto


def cpu_fp16_coverage(model_path: str | os.PathLike, workdir: Path) -> tuple[str, ...]:
    """Op types of the FP16 graph that onnxruntime CPU has no FP16 kernel for (here).

    ORT's InsertCastTransformer wraps them in Casts named ``InsertedPrecisionFreeCast_*``
    (visible in the graph it saves with optimizations disabled) and computes them in FP32.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    saved = workdir / "ort_inserted_casts.onnx"
    make_session(model_path, optimize=False, optimized_path=saved)
    g = onnx.load(str(saved)).graph
    inserted = {o for n in g.node if n.op_type == "Cast" and n.name.startswith("InsertedPrecisionFreeCast") for o in n.output}
    ops = {n.op_type for n in g.node if n.op_type != "Cast" and any(i in inserted for i in n.input)}
    saved.unlink(missing_ok=True)
    return tuple(sorted(ops))


def compare(fp32_path: str | os.PathLike, fp16_path: str | os.PathLike, images: np.ndarray,
            labels: np.ndarray | None, workdir: Path, data: str = "") -> Fp16Report:
    """FP16 vs FP32 file on real images (uint8 NHWC RGB), the worst of two CPU runs of the
    FP16 file: as it is on onnxruntime CPU (weights FP16; ops without CPU FP16 kernels
    computed in FP32, see :func:`cpu_fp16_coverage`), and :func:`emulate_fp16_storage`
    (every FP16 activation rounded to FP16, which is what a GPU stores)."""
    m32, s32 = run_cpu(fp32_path, images)
    runs = [
        run_cpu(fp16_path, images),
        run_cpu(emulate_fp16_storage(onnx.load(str(fp16_path))).SerializeToString(), images, optimize=False),
    ]
    a32 = auroc(labels, s32) if labels is not None else None
    threshold = read_onnx_meta(fp32_path).thresholds.image
    worst_err, nonfinite, worst_rho, a16, flips = 0.0, 0, 1.0, None, 0
    for m16, s16 in runs:
        flips = max(flips, verdict_changes(s32, s16, threshold))
        bad = int((~np.isfinite(m16)).sum() + (~np.isfinite(s16)).sum())
        err = float(np.abs(m16 - m32).max()) if bad == 0 else float("inf")
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
        map_max_rel=worst_err / max(float(np.abs(m32).max()), 1e-12),
        nonfinite=nonfinite,
        cast_fallback_ops=cpu_fp16_coverage(fp16_path, workdir),
        verdict_flips=flips,
        data=data,
    )
