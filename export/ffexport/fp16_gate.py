"""The FP16 gate: the FP16 file against the FP32 file on real images, on a CPU.

What is compared: the image score's rank correlation, the image AUROC on labelled images,
and the largest map difference (at most 2% of the FP32 map's peak, or 3x the model's own FP16
map noise where that is larger);
any non-finite value fails; the score error against the model's own FP16 noise; and at most
1% of the images may change their pass/fail verdict at the file's image threshold (what a line
sees), a change counting only where the FP32 score lies outside the FP16 noise band around the
threshold. ``ffexport --fp16`` runs it on validation data, as the INT8 and BF16 gates do
(held-out training normals and synthetic defects drawn on them; never the test split), and
publishes the FP16 file only when the report is OK (staging.py: all or nothing).

Why the noise reference: a part whose FP32 score lies within FP16 rounding noise of the
threshold flips under any correct FP16 conversion, so a plain flip count refuses good
conversions of real models for one borderline part, and cannot tell them from a broken
conversion (a backbone weight 2% off also flips one part in 64). :func:`ideal_fp16_storage`
builds, from the FP32 file alone, what an exact FP16 conversion computes; its score
differences from FP32 are this model's FP16 noise on these images (``noise``: the largest).
A correct conversion's score errors stay within :data:`FP16_MAX_NOISE_RATIO` times that noise,
and, with its FP16 storage emulated, it computes what the exact conversion computes to within
:data:`FP16_MAX_DEPARTURE` of that noise (only the order of rounding differs); a wrong weight
departs by about its own effect, whatever the threshold. A verdict change counts only where the
FP32 score is farther from the threshold than 3x the noise, which no correct conversion can cause.
The figures that set the ratio are in benchmarks/README.md ("The FP16 gate's noise reference").

Why the map and verdict bounds as well: the map bound is relative to the map's peak over the
gate images, and synthetic defects peak far higher than real ones, which loosens it on
validation data; a verdict that changes is a change a user sees whatever the peaks.

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
from ffcore.metrics import roc_auc
from ffcore.rankcorr import spearman
from ffcore.ort import make_session
from ffrt.metafile import read_onnx_meta
from onnx import TensorProto, helper, numpy_helper

#: Parity tolerances of FP16 vs FP32 on real images (checked by ffexport --fp16), the bounds
#: of every reduced float precision against the same file in FP32 (ffcalib's BF16 gate too).
#: FP16 keeps ~3 decimal digits per activation; through ~40 convolutions that gives
#: ~0.1-1 % relative error on the map. The ranking of parts must survive it.
from ffcalib.bf16 import REDUCED_MAX_AUROC_DIFF as FP16_MAX_AUROC_DIFF  # noqa: E402  |AUROC16 - AUROC32|, labelled images
from ffcalib.bf16 import REDUCED_MAX_MAP_REL as FP16_MAX_MAP_REL  # noqa: E402  max |map16 - map32| / max |map32|
from ffcalib.bf16 import REDUCED_MIN_SPEARMAN as FP16_MIN_SPEARMAN  # noqa: E402  score rank correlation
from ffcalib.bf16 import REDUCED_MAX_VERDICT_CHANGE as FP16_MAX_VERDICT_CHANGE  # noqa: E402  share of verdicts


#: A correct FP16 conversion's largest score error is within this many times the model's FP16
#: noise (the largest score difference of :func:`ideal_fp16_storage` from FP32 on the same images);
#: the same multiple of the noise is the band around the threshold where a verdict change is a
#: borderline part, not the conversion's fault.
FP16_MAX_NOISE_RATIO = 3.0
#: A correct conversion stores what an exact one stores: run with FP16 storage emulated, the FP16
#: file's scores and maps stay within this share of the model's FP16 noise of the exact
#: conversion's (:func:`ideal_fp16_storage`); only rounding order differs. A wrong weight moves them by
#: about its own effect, whatever the threshold (benchmarks/README.md, "The FP16 gate's noise reference").
FP16_MAX_DEPARTURE = 0.5


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
    #: The model's FP16 score noise on these images (largest |ideal FP16 - FP32| score); None
    #: when the FP32 file records no name scopes to build the reference from (every flip counts).
    noise: float | None = None
    #: Largest |FP16 - FP32| image score (worst run).
    score_max_abs: float = 0.0
    #: Of ``verdict_flips``, the images whose FP32 score lies within the noise band of the threshold.
    borderline_flips: int = 0
    #: The model's FP16 map noise (largest |ideal FP16 - FP32| map value); None as ``noise``.
    map_noise: float | None = None
    #: Largest |score| and |map| difference between the FP16 file (FP16 storage emulated) and the exact
    #: FP16 conversion, in units of ``noise`` and ``map_noise`` (a correct conversion: well below 1).
    departure: float | None = None
    map_departure: float | None = None

    @property
    def map_bound(self) -> float:
        """The largest map error allowed: 2% of the FP32 peak, or, where this model's own FP16 map
        noise is larger (maps standardized by small spreads amplify it), 3x that noise."""
        peak = self.map_max_abs / self.map_max_rel if self.map_max_rel > 0 else 0.0
        bound = FP16_MAX_MAP_REL * peak
        return max(bound, FP16_MAX_NOISE_RATIO * self.map_noise) if self.map_noise is not None else bound

    @property
    def noise_ratio(self) -> float | None:
        """Largest score error in units of the FP16 noise (a correct conversion: about 1)."""
        if self.noise is None:
            return None
        return self.score_max_abs / self.noise if self.noise > 0 else (0.0 if self.score_max_abs == 0 else float("inf"))

    @property
    def counted_flips(self) -> int:
        return self.verdict_flips - self.borderline_flips

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
            and self.map_max_abs <= self.map_bound
            and (d is None or d <= FP16_MAX_AUROC_DIFF)
            and (self.noise_ratio is None or self.noise_ratio <= FP16_MAX_NOISE_RATIO)
            and (self.departure is None or self.departure <= FP16_MAX_DEPARTURE)
            and (self.map_departure is None or self.map_departure <= FP16_MAX_DEPARTURE)
            and self.counted_flips <= FP16_MAX_VERDICT_CHANGE * self.images
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
        noise = (
            f"score max abs {self.score_max_abs:.3g} = {self.noise_ratio:.2f}x the model's FP16 noise {self.noise:.3g} "
            f"(tol {FP16_MAX_NOISE_RATIO:g}x)"
            if self.noise is not None
            else f"score max abs {self.score_max_abs:.3g} (no FP16 noise reference: the FP32 file has no name scopes)"
        )
        departure = (f", departure from an exact FP16 conversion {self.departure:.2f}x the score noise and "
                     f"{self.map_departure:.2f}x the map noise (tol {FP16_MAX_DEPARTURE:g}x)"
                     if self.departure is not None and self.map_departure is not None else "")
        map_tol = (f"tol {self.map_bound:.3g}: the larger of {FP16_MAX_MAP_REL} of the peak and "
                   f"{FP16_MAX_NOISE_RATIO:g}x the model's FP16 map noise {self.map_noise:.3g}"
                   if self.map_noise is not None else f"tol {FP16_MAX_MAP_REL} of the peak")
        border = (f", {self.borderline_flips} of them within {FP16_MAX_NOISE_RATIO:g}x the noise of the threshold "
                  f"(borderline parts, not counted)" if self.borderline_flips else "")
        return (
            f"fp16 vs fp32 on {self.images} images{f' ({self.data})' if self.data else ''}: score Spearman "
            f"{self.spearman:.5f} (tol >= {FP16_MIN_SPEARMAN}), {au}, map max abs {self.map_max_abs:.3g} "
            f"(rel {self.map_max_rel:.3g}; {map_tol}), non-finite values {self.nonfinite}, "
            f"{noise}{departure}, verdicts changed at the image threshold {self.verdict_flips} of {self.images}"
            f"{border} (tol {FP16_MAX_VERDICT_CHANGE:.0%})"
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
    for n in g.node:
        _retype_attributes(n)
    _store_through_fp16(g, [], {t for n in g.node for t in n.output if types[t] == TensorProto.FLOAT16}, "emulate")
    return proto


def _store_through_fp16(g: onnx.GraphProto, first: list[onnx.NodeProto], stored: set[str], tag: str) -> None:
    """Rebuild ``g``'s nodes (after ``first``) so that every tensor in ``stored`` that a node
    writes passes through Cast(FP16) -> Cast(FP32): the node computes in FP32, the tensor is
    stored as FP16 would store it (rounded; above 65504, inf)."""
    nodes = list(first)
    for i, n in enumerate(g.node):
        nodes.append(n)
        for j, t in enumerate(n.output):
            if t not in stored:
                continue
            raw, half = f"{t}__{tag}_fp32_math", f"{t}__{tag}_fp16"
            n.output[j] = raw
            nodes.append(helper.make_node("Cast", [raw], [half], to=TensorProto.FLOAT16, name=f"{tag}_{i}_{j}_to16"))
            nodes.append(helper.make_node("Cast", [half], [t], to=TensorProto.FLOAT, name=f"{tag}_{i}_{j}_to32"))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]


#: Name scopes (torch.onnx's ``pkg.torch.onnx.name_scopes`` node metadata) of the stages the FP16
#: file runs in FP16 (precision.HALF_STAGES as the fused graph names them: graph.FusedGraph).
HALF_SCOPES = ("model.backbone", "model.norms", "flows")


def _scopes(node: onnx.NodeProto) -> list[str]:
    import ast

    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            return ast.literal_eval(p.value)
    return []


def ideal_fp16_storage(fp32: onnx.ModelProto, scopes: tuple[str, ...] = HALF_SCOPES) -> onnx.ModelProto | None:
    """The FP32 file as an exact FP16 conversion would compute: the reference for the FP16 noise.

    Built from the FP32 file alone, independently of the conversion under test: the weights read
    by the nodes of the half ``scopes`` are rounded to FP16 once, and every float tensor those
    nodes read or write is stored through Cast(FP16) -> Cast(FP32), math in FP32 (as
    :func:`emulate_fp16_storage` stores the FP16 file). Its scores differ from the FP32 file's
    by the FP16 rounding noise of this model on these images and nothing else; a conversion
    that is wrong differs by more. None when the file records no name scopes (an old export).
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(fp32)
    g = proto.graph
    half = [n for n in g.node if any(s == sc or s.startswith(sc + ".") for s in _scopes(n) for sc in scopes)]
    if not half:
        return None
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.input)
             + list(inferred.graph.output)}
    weights = {t.name: i for i, t in enumerate(g.initializer)}
    rounded = set()
    for n in half:
        for t in n.input:
            i = weights.get(t)
            if i is not None and t not in rounded and g.initializer[i].data_type == TensorProto.FLOAT:
                value = numpy_helper.to_array(g.initializer[i]).astype(np.float16).astype(np.float32)
                g.initializer[i].CopyFrom(numpy_helper.from_array(value, t))
                rounded.add(t)
    stored = {t for n in half for t in list(n.input) + list(n.output)
              if t and t not in weights and types.get(t) == TensorProto.FLOAT}
    graph_inputs = {v.name for v in g.input}
    nodes: list[onnx.NodeProto] = []
    for i, t in enumerate(sorted(stored & graph_inputs)):  # a half stage reading the graph input directly
        nodes.append(helper.make_node("Cast", [t], [f"{t}__ideal16_in"], to=TensorProto.FLOAT16, name=f"ideal_in{i}_to16"))
        nodes.append(helper.make_node("Cast", [f"{t}__ideal16_in"], [f"{t}__ideal32_in"], to=TensorProto.FLOAT,
                                      name=f"ideal_in{i}_to32"))
        for n in g.node:
            for j, x in enumerate(n.input):
                if x == t:
                    n.input[j] = f"{t}__ideal32_in"
    _store_through_fp16(g, nodes, stored, "ideal")
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
    ideal = ideal_outputs(fp32_path, images)
    noise, map_noise = (None, None) if ideal is None else (float(np.abs(ideal[1] - s32).max()),
                                                            float(np.abs(ideal[0] - m32).max()))
    departure = map_departure = None
    if ideal is not None:
        me, se = runs[1]  # the FP16 file with its FP16 storage emulated, against the exact conversion
        departure = float(np.abs(se - ideal[1]).max()) / max(noise, 1e-12)
        map_departure = float(np.abs(me - ideal[0]).max()) / max(map_noise, 1e-12)
    band = None if noise is None else FP16_MAX_NOISE_RATIO * noise
    worst_err, nonfinite, worst_rho, a16, flips, border, score_err = 0.0, 0, 1.0, None, 0, 0, 0.0
    for m16, s16 in runs:
        # The worse run: the more counted changes, then the more changes.
        changed = (s32 > threshold) != ~(s16 <= threshold)  # a NaN score rejects, as the Detector decides
        near = int((changed & (np.abs(s32 - threshold) <= band)).sum()) if band is not None else 0
        if (int(changed.sum()) - near, int(changed.sum())) > (flips - border, flips):
            flips, border = int(changed.sum()), near
        bad = int((~np.isfinite(m16)).sum() + (~np.isfinite(s16)).sum())
        err = float(np.abs(m16 - m32).max()) if bad == 0 else float("inf")
        score_err = max(score_err, float(np.abs(s16 - s32).max()) if bad == 0 else float("inf"))
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
        noise=noise,
        score_max_abs=score_err,
        borderline_flips=border,
        map_noise=map_noise,
        departure=departure,
        map_departure=map_departure,
    )


def ideal_outputs(fp32_path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(maps, scores) of :func:`ideal_fp16_storage` of the FP32 file on ``images``: their
    differences from the FP32 file's are this model's FP16 noise. None without name scopes or
    when the reference itself overflows."""
    ideal = ideal_fp16_storage(onnx.load(str(fp32_path)))
    if ideal is None:
        return None
    mi, si = run_cpu(ideal.SerializeToString(), images, optimize=False)
    if not (np.all(np.isfinite(si)) and np.all(np.isfinite(mi))):
        return None
    return mi, si
