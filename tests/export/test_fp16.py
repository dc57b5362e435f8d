"""FP16 export: traced in half precision from PyTorch, the head FP32, checked on CPU with real images.

The tiny FastFlow trained on real ELPV cells (tests/conftest.py) and a ResNet-18 one are
exported by the real exporter; every graph runs on the real onnxruntime. Which node
belongs to which module of the model is read from the names the exporter records
(torch.onnx's ``pkg.torch.onnx.name_scopes`` node metadata, e.g. ``model.head``), never
from what a node computes.
"""

from __future__ import annotations

import ast
import copy
from collections import deque

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from ffcore.metrics import roc_auc
from ffcore.rankcorr import spearman
from ffexport import fp16_gate
from ffexport.fp16_gate import compare, emulate_fp16_storage
from ffexport.precision import export_fp16, fold_batch_norms, half_model
from ffrt.metafile import read_onnx_meta

# The FP16 gate's documented tolerances (docs/precision-and-tensorrt.md, ffexport --help): the FP16 file against the
# FP32 file on real images.
MIN_SPEARMAN, MAX_AUROC_DIFF, MAX_MAP_REL, MAX_VERDICT_CHANGE = 0.99, 0.01, 0.02, 0.01
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _export_fp16(ckpt, out):
    from fftrain import checkpoint

    model, payload = checkpoint.load(ckpt)
    path, _ = export_fp16(model, payload, checkpoint.sha256(ckpt), out, batch_max=8)
    return path


@pytest.fixture(scope="module")
def fp16(tiny_checkpoint, tmp_path_factory):
    return _export_fp16(tiny_checkpoint, tmp_path_factory.mktemp("fp16") / "model.fp16.onnx")


@pytest.fixture(scope="module")
def labelled(elpv_split):
    """32 normal + 32 defective real ELPV test cells at the tiny model's size."""
    from fftrain.data import load_batch

    good = [s for s in elpv_split.test if s.label == 0][:32]
    bad = [s for s in elpv_split.test if s.label == 1][:32]
    return load_batch(good + bad, 64), np.array([0] * len(good) + [1] * len(bad))


def _scopes(node: onnx.NodeProto) -> list[str]:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            return ast.literal_eval(p.value)
    return []


def _in(model: onnx.ModelProto, module: str) -> list[onnx.NodeProto]:
    """Nodes of ``module`` or of its children (``model.flows`` holds ``model.flows.0``, ...)."""
    nodes = [n for n in model.graph.node if any(s == module or s.startswith(module + ".") for s in _scopes(n))]
    assert nodes, f"no node recorded as part of {module} (did torch.onnx stop writing name scopes?)"
    return nodes


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    t = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    t.update({v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)})
    t.update({i.name: i.data_type for i in model.graph.initializer})
    return t


def _cast_to(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def _run(model_or_path, images, optimize=True):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    feeds = images if isinstance(images, dict) else {name: images}
    return sess.run(None, feeds)


def test_io_metadata_and_size(tiny_onnx, fp16):
    model, fp32 = onnx.load(str(fp16)), onnx.load(str(tiny_onnx))
    sig = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]  # noqa: E731
    assert sig(model) == sig(fp32) == [("image", TensorProto.UINT8), ("anomaly_map", FLOAT), ("score", FLOAT)]
    meta, meta32 = read_onnx_meta(fp16), read_onnx_meta(tiny_onnx)
    assert meta.precision == "fp16" and meta32.precision == "fp32"
    assert meta.thresholds == meta32.thresholds and meta.input == meta32.input
    assert meta.source_checkpoint_sha256 == meta32.source_checkpoint_sha256
    # The weights are halved; the graph's structure and metadata are not.
    assert 0.45 < fp16.stat().st_size / tiny_onnx.stat().st_size < 0.6


def test_head_fp32_backbone_and_flows_fp16(fp16):
    model = onnx.load(str(fp16))
    types = _types(model)
    head = _in(model, "model.head")
    # the map (z*z summed over channels), its fusion as matrix products, the top-k score
    assert {"Mul", "ReduceSum", "MatMul", "TopK"} <= {n.op_type for n in head}
    # Everything from the head's first node to the outputs is FP32 (dataflow, not scopes:
    # nodes the optimizer re-created without metadata are caught too).
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    weights = {t.name for t in model.graph.initializer}
    seen, queue, floats = set(), deque(head), {}
    while queue:
        n = queue.popleft()
        if n.name in seen:
            continue
        seen.add(n.name)
        # what each node writes, and the weights it reads (the standardization maps)
        for t in list(n.output) + [t for t in n.input if t in weights]:
            if types.get(t) in (FLOAT, HALF):
                floats[t] = types[t]
        for t in n.output:
            queue.extend(readers.get(t, []))
    assert len(seen) >= len(head) and set(floats.values()) == {FLOAT}, {t: v for t, v in floats.items() if v != FLOAT}
    assert {o.name for o in model.graph.output} <= set(floats)
    # The head's input: one FP16 -> FP32 cast per half of each scale's z (the shipped flow
    # hands z over as two halves, fftrain.fused_flow), in the head itself.
    to32 = [n for n in head if _cast_to(n) == FLOAT and types[n.input[0]] == HALF]
    assert len(to32) == 6
    # Backbone and flows compute in FP16: weights and outputs of every convolution.
    for module, at_least in (("model.backbone", 10), ("flows", 12)):
        convs = [n for n in _in(model, module) if n.op_type == "Conv"]
        assert len(convs) >= at_least, module
        assert all(types[n.input[1]] == HALF and types[n.output[0]] == HALF for n in convs), module
    norms = [n for n in _in(model, "model.norms") if n.op_type == "LayerNormalization"]
    assert len(norms) == 3 and all(types[n.output[0]] == HALF for n in norms)
    # One cast into FP16 in the whole graph (the normalized image, at the backbone's input),
    # and no batch norm left (folded in FP32 before the weights were rounded).
    assert len([n for n in model.graph.node if _cast_to(n) == HALF]) == 1
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]


def test_export_leaves_the_fp32_model_alone(tiny_checkpoint):
    from fftrain import checkpoint

    model, _ = checkpoint.load(tiny_checkpoint)
    before = copy.deepcopy(model.state_dict())
    half = half_model(model)
    assert all(v.dtype != torch.float16 for v in model.state_dict().values())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert next(half.backbone.parameters()).dtype == torch.float16 and next(half.flows.parameters()).dtype == torch.float16
    assert all(v.dtype == torch.float32 for k, v in half.state_dict().items() if k.startswith("head."))
    assert not [m for m in half.modules() if isinstance(m, torch.nn.BatchNorm2d)]  # folded before rounding
    with pytest.raises(ValueError, match="norms and flows together"):
        half_model(model, ("backbone", "flows"))


def test_every_conv_weight_is_the_fp32_files_rounded_once(tiny_onnx, fp16):
    """Each FP16 weight is its FP32 file's value rounded to FP16 once (within one FP16 ulp:
    the two files fold batch norms with differently ordered float operations). Folding
    FP16-rounded statistics in FP16 arithmetic would be several ulps off."""
    def conv_weights(path):
        model = onnx.load(str(path))
        init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return [init[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]

    w32, w16 = conv_weights(tiny_onnx), conv_weights(fp16)
    # The tiny model reads luma: its input stage (luminance and normalization, one 1x1
    # convolution) computes in FP32 in both files, as the normalization always has.
    assert w16[0].dtype == np.float32 and w16[0].shape == (3, 3, 1, 1)
    np.testing.assert_array_equal(w16[0], w32[0])
    w32, w16 = w32[1:], w16[1:]
    assert len(w32) == len(w16) > 20
    for a, b in zip(w32, w16):
        assert b.dtype == np.float16 and a.shape == b.shape
        ulp = np.spacing(np.abs(a).astype(np.float16)).astype(np.float32)
        assert np.all(np.abs(b.astype(np.float32) - a) <= ulp)


def test_fp16_file_tracks_fp32_file_on_real_elpv(tiny_onnx, fp16, labelled):
    """Independent of the gate's code: both files on onnxruntime, the figures computed here."""
    images, labels = labelled
    m32, s32 = _run(tiny_onnx, images)
    m16, s16 = _run(fp16, images)
    assert np.isfinite(m16).all() and np.isfinite(s16).all()
    rel = float(np.abs(m16 - m32).max() / np.abs(m32).max())
    assert 0 < rel <= MAX_MAP_REL  # > 0: the FP16 weights really are rounded
    assert spearman(s32, s16) >= MIN_SPEARMAN
    assert abs(roc_auc(labels, s16) - roc_auc(labels, s32)) <= MAX_AUROC_DIFF
    # FP16 storage of every activation (what a GPU does; ORT CPU computes FP16 regions in
    # FP32): still within tolerance, and further from FP32 than the weights alone.
    me, se = _run(emulate_fp16_storage(onnx.load(str(fp16))), images, optimize=False)
    rel_emulated = float(np.abs(me - m32).max() / np.abs(m32).max())
    assert rel < rel_emulated <= MAX_MAP_REL
    assert spearman(s32, se) >= MIN_SPEARMAN


def test_gate_passes_the_fp16_file_and_fails_a_wrong_one(tiny_onnx, fp16, labelled, tmp_path):
    images, labels = labelled
    assert (fp16_gate.FP16_MIN_SPEARMAN, fp16_gate.FP16_MAX_AUROC_DIFF, fp16_gate.FP16_MAX_MAP_REL,
            fp16_gate.FP16_MAX_VERDICT_CHANGE) == (MIN_SPEARMAN, MAX_AUROC_DIFF, MAX_MAP_REL, MAX_VERDICT_CHANGE)
    report = compare(tiny_onnx, fp16, images, labels, tmp_path)
    assert report.ok and report.nonfinite == 0 and report.images == 64, str(report)
    m32, _ = _run(tiny_onnx, images)
    m16, _ = _run(fp16, images)
    assert report.map_max_abs >= float(np.abs(m16 - m32).max())  # the worse of the file and its emulation
    # onnxruntime CPU has no FP16 kernel for the convolutions here: the report says so.
    assert "Conv" in report.cast_fallback_ops
    # An FP16 file one backbone weight 10% off (a wrong conversion) is refused.
    model = onnx.load(str(fp16))
    conv = next(n for n in _in(model, "model.backbone") if n.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float16(1.1), weight.name))
    wrong = tmp_path / "wrong.fp16.onnx"
    onnx.save(model, str(wrong))
    bad = compare(tiny_onnx, wrong, images, labels, tmp_path)
    assert not bad.ok and bad.map_max_rel > MAX_MAP_REL, str(bad)


def _with_threshold(src, dst, threshold):
    from ffrt.metafile import write_onnx_meta

    dst.write_bytes(src.read_bytes())
    meta = read_onnx_meta(dst)
    write_onnx_meta(dst, meta.model_copy(update={"thresholds": meta.thresholds.model_copy(update={"image": threshold})}))
    return dst


def _scale_first_fp16_conv(fp16, factor, out):
    model = onnx.load(str(fp16))
    conv = next(n for n in _in(model, "model.backbone") if n.op_type == "Conv"
                and next(t for t in model.graph.initializer if t.name == n.input[1]).data_type == HALF)
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float16(factor), weight.name))
    onnx.save(model, str(out))
    return out


def _fp16_runs(fp16, images):
    return [_run(fp16, images)[1], _run(emulate_fp16_storage(onnx.load(str(fp16))), images, optimize=False)[1]]


def test_a_borderline_part_does_not_refuse_a_correct_conversion(tiny_onnx, fp16, labelled, tmp_path):
    """With the image threshold set between one image's FP32 and FP16 scores, that verdict
    differs under the correct FP16 file: a part within FP16 noise of the threshold, which any
    correct conversion may flip. The gate reports it and passes."""
    images, labels = labelled
    _, s32 = _run(tiny_onnx, images)
    runs = _fp16_runs(fp16, images)
    i = int(np.argmax(np.abs(runs[1] - s32)))
    assert runs[1][i] != s32[i]
    threshold = float((s32[i] + runs[1][i]) / 2)
    expected = max(int(((s32 > threshold) != (s16 > threshold)).sum()) for s16 in runs)
    assert expected >= 1
    moved = _with_threshold(tiny_onnx, tmp_path / "moved.onnx", threshold)
    report = compare(moved, fp16, images, labels, tmp_path, data="the test cells")
    assert report.verdict_flips == report.borderline_flips == expected, str(report)
    assert report.ok, str(report)
    assert f"verdicts changed at the image threshold {expected} of 64, {expected} of them within 3x the noise" in str(report)
    assert report.score_max_abs == pytest.approx(max(float(np.abs(r - s32).max()) for r in runs), rel=1e-6)
    assert report.noise_ratio <= 1.5  # a correct conversion sits at about its own noise


def test_a_wrong_conversion_is_refused_at_any_threshold(tiny_onnx, fp16, labelled, tmp_path):
    """One backbone weight 2% off: map, Spearman and AUROC within their bounds, no verdict
    changed at the stored threshold, and still refused: its score errors are many times the
    model's FP16 noise."""
    images, labels = labelled
    wrong = _scale_first_fp16_conv(fp16, 1.02, tmp_path / "wrong.fp16.onnx")
    _, s32 = _run(tiny_onnx, images)
    good = compare(tiny_onnx, fp16, images, labels, tmp_path)
    bad = compare(tiny_onnx, wrong, images, labels, tmp_path)
    assert good.ok and not bad.ok, str(bad)
    errors = max(float(np.abs(r - s32).max()) for r in _fp16_runs(wrong, images))
    assert bad.score_max_abs == pytest.approx(errors, rel=1e-6)
    assert bad.noise == pytest.approx(good.noise)  # the reference does not depend on the file under test
    assert errors > 3 * good.noise and bad.noise_ratio > 3
    assert bad.spearman >= MIN_SPEARMAN and bad.auroc_diff <= MAX_AUROC_DIFF  # the other bounds let it through
    # With its FP16 storage emulated, the correct file computes what an exact conversion does.
    assert good.departure < 0.5 and good.map_departure < 0.5 and bad.departure > 0.5


def test_a_half_percent_wrong_weight_departs_from_the_exact_conversion(tiny_onnx, fp16, labelled, tmp_path,
                                                                      monkeypatch):
    """Where the score-error bound is loose (high-scoring defects make the noise large, as on the
    default ELPV model), the departure from an exact FP16 conversion still refuses a weight 0.5% off."""
    images, labels = labelled
    monkeypatch.setattr(fp16_gate, "FP16_MAX_NOISE_RATIO", 100.0)
    wrong = _scale_first_fp16_conv(fp16, 1.005, tmp_path / "wrong.fp16.onnx")
    good = compare(tiny_onnx, fp16, images, labels, tmp_path)
    bad = compare(tiny_onnx, wrong, images, labels, tmp_path)
    assert good.ok and not bad.ok, str(bad)
    assert bad.departure > 0.5 and bad.noise_ratio <= 100 and bad.map_max_abs <= bad.map_bound
    assert "departure from an exact FP16 conversion" in str(bad)


def test_without_a_noise_reference_every_changed_verdict_counts(tiny_onnx, fp16, labelled, tmp_path):
    """An FP32 file without name scopes (an older export) gives no reference: the gate falls back
    to counting every changed verdict, and says so."""
    images, labels = labelled
    _, s32 = _run(tiny_onnx, images)
    runs = _fp16_runs(fp16, images)
    i = int(np.argmax(np.abs(runs[1] - s32)))
    threshold = float((s32[i] + runs[1][i]) / 2)
    expected = max(int(((s32 > threshold) != (s16 > threshold)).sum()) for s16 in runs)
    model = onnx.load(str(tiny_onnx))
    for n in model.graph.node:
        del n.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    moved = _with_threshold(bare, tmp_path / "moved.onnx", threshold)
    report = compare(moved, fp16, images, labels, tmp_path)
    assert report.noise is None and report.verdict_flips == expected and report.borderline_flips == 0
    assert not report.ok and "no FP16 noise reference" in str(report)


def test_ideal_fp16_reference_rounds_the_half_stages_only(tiny_onnx, fp16):
    """Built from the FP32 file: the weights of the backbone, norms and flows rounded to FP16
    once, the input stage's and the head's weights exactly the FP32 file's."""
    model = onnx.load(str(tiny_onnx))
    ideal = fp16_gate.ideal_fp16_storage(model)
    w32 = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    wi = {t.name: numpy_helper.to_array(t) for t in ideal.graph.initializer}
    half = {t for n in _in(model, "model.backbone") + _in(model, "flows") for t in n.input if t in w32}
    head = {t for n in _in(model, "model.head") for t in n.input if t in w32} - half
    assert half and head
    for name in half:
        if w32[name].dtype == np.float32:
            np.testing.assert_array_equal(wi[name], w32[name].astype(np.float16).astype(np.float32))
    assert any(not np.array_equal(wi[n], w32[n]) for n in half if w32[n].dtype == np.float32)
    for name in head:
        np.testing.assert_array_equal(wi[name], w32[name])
    casts = [n for n in ideal.graph.node if n.op_type == "Cast" and n.name.startswith("ideal_")]
    assert casts and all(_cast_to(n) in (FLOAT, HALF) for n in casts)


def test_storage_emulation_rounds_and_overflows_like_fp16():
    """A hand-made FP16 graph: x -> Cast(FP16) -> Mul(2) -> Cast(FP32). The emulation must
    round every FP16 tensor and overflow above 65504; ORT CPU on the file itself does not."""
    x = helper.make_tensor_value_info("x", FLOAT, [3])
    y = helper.make_tensor_value_info("y", FLOAT, [3])
    two = numpy_helper.from_array(np.array([2.0], np.float16), "two")
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=HALF),
        helper.make_node("Mul", ["x16", "two"], ["y16"]),
        helper.make_node("Cast", ["y16"], ["y"], to=FLOAT),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [two]), opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    feeds = {"x": np.array([0.1, 40000.0, 1.0], np.float32)}
    (emulated,) = _run(emulate_fp16_storage(model), feeds, optimize=False)
    # fp16(0.1) = 0.0999755859375, doubled exactly; 80000 > 65504 is inf in FP16.
    assert emulated[0] == np.float32(0.199951171875) and np.isinf(emulated[1]) and emulated[2] == 2.0
    assert all(t.data_type != HALF for t in emulate_fp16_storage(model).graph.initializer)


def test_strong_defect_stays_finite_in_the_fp32_head(tiny_checkpoint, tiny_onnx, fp16, real_images):
    """z*z overflows FP16 once |z| > 255.9. The tiny model's flows do not produce such z on
    uint8 input, so the defect is made strong where it matters: real z of real cells with a
    patch of |z| = 300, fed to the FP16 file's own head (cut out at its input casts); its
    answer must be finite and PyTorch's FP32 head's answer."""
    from fftrain import checkpoint

    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(300.0) * np.float16(300.0))  # the patch does overflow FP16
    model16 = onnx.load(str(fp16))
    types = _types(model16)
    to32 = [n for n in _in(model16, "model.head") if _cast_to(n) == FLOAT and types[n.input[0]] == HALF]
    zs = [n.output[0] for n in to32]
    # The memory bank's part of the score (FP32 too) reads the FP16 backbone's stride-16 features.
    bank_in = [n.input[0] for n in _in(model16, "model.bank") if _cast_to(n) == FLOAT and types[n.input[0]] == HALF]
    assert len(bank_in) == 1
    head_file = onnx.utils.Extractor(model16).extract_model(zs + bank_in, ["anomaly_map", "score"])

    model, _ = checkpoint.load(tiny_checkpoint)
    x = torch.from_numpy(real_images[:4]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        feats = [f.half() for f in model.extract(x)]
        z_real, _ = model.flow([f.float() for f in feats])
    z_def = [z.clone() for z in z_real]
    patch = z_def[0][:, :, 4:8, 4:8]
    z_def[0][:, :, 4:8, 4:8] = torch.where(patch < 0, -300.0, 300.0)
    with torch.no_grad():
        map_torch, score_torch = model.with_bank(*model.head(z_def), [f.float() for f in feats])
    # The file's head reads each scale's z as the shipped flow's two halves (fftrain.fused_flow):
    # z's channels in the order before the last permutation, split where the flow splits. The
    # map sums over all channels of both, so halves of equal shape may be fed either way round.
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for z, flow in zip(z_def, model.flows):
        last = flow.steps[-1]
        y = z[:, last.inverse_permutation]
        for half in (y[:, : last.kept], y[:, last.kept :]):
            by_shape.setdefault(tuple(half.shape[1:]), []).append(half.numpy())
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim[1:]) for v in head_file.graph.input}
    assert len(zs) == 2 * len(z_def)
    map16, score16 = _run(head_file, {**{name: by_shape[shapes[name]].pop() for name in zs}, bank_in[0]: feats[2].numpy()})
    assert np.isfinite(map16).all() and np.isfinite(score16).all()
    assert map16.max() > 1000  # the defect shows
    np.testing.assert_allclose(map16, map_torch.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(score16, score_torch.numpy(), rtol=1e-4)

    # And a strong defect in the image itself, through the whole FP16 file and its emulation.
    defect = real_images[:4].copy()
    defect[:, 16:48, 16:48] = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    defect[:, 24:40, 24:40] = 255
    for m, s in (_run(fp16, defect), _run(emulate_fp16_storage(model16), defect, optimize=False)):
        assert np.isfinite(m).all() and np.isfinite(s).all()


def test_fold_batch_norms_keeps_the_features():
    """Folding in FP32 changes no feature (beyond float re-association), on a ResNet whose
    norms have non-trivial statistics and on EfficientNet-Lite0 with its real weights."""
    from fftrain.backbones import build_feature_extractor

    torch.manual_seed(0)
    resnet, _ = build_feature_extractor("resnet18", random=True)
    for m in resnet.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.2, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    lite, _ = build_feature_extractor("efficientnet_lite0")
    x = torch.rand(2, 3, 64, 64)
    for backbone, norms in ((resnet.eval(), 15), (lite.eval(), 33)):
        folded = copy.deepcopy(backbone)
        assert fold_batch_norms(folded) == norms
        assert not [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            for a, b in zip(backbone(x), folded(x)):
                assert float((a - b).abs().max() / a.abs().max()) < 1e-5


@pytest.fixture(scope="module")
def resnet_files(elpv_split, tmp_path_factory):
    """A tiny ResNet-18 FastFlow (random backbone: no ResNet weights ship with the tests)
    trained on the real cells, exported in FP32 and FP16."""
    from fftrain import checkpoint
    from fftrain.config import ModelConfig
    from fftrain.train import TrainSettings, train_and_save
    from ffexport.exporter import export_onnx

    out = tmp_path_factory.mktemp("resnet")
    config = ModelConfig(backbone="resnet18", random_backbone=True, image_size=64, flow_steps=2)
    train_and_save(config, elpv_split, TrainSettings(epochs=1, batch_size=16, augment_views=0, progress=False),
                   out / "model.pt", log=lambda _: None)
    model, payload = checkpoint.load(out / "model.pt")
    sha = checkpoint.sha256(out / "model.pt")
    fp32, _ = export_onnx(model, payload, sha, out / "model.onnx", batch_max=8)
    fp16, _ = export_fp16(model, payload, sha, out / "model.fp16.onnx", batch_max=8)
    return fp32, fp16


def test_resnet_fp16_passes_the_gate(resnet_files, labelled, tmp_path):
    fp32, fp16 = resnet_files
    images, labels = labelled
    report = compare(fp32, fp16, images, labels, tmp_path)
    assert report.ok, str(report)
    model = onnx.load(str(fp16))
    types = _types(model)
    convs = [n for n in _in(model, "model.backbone") if n.op_type == "Conv"]
    assert len(convs) >= 15 and all(types[n.input[1]] == HALF for n in convs)
    assert all(types[t] == FLOAT for n in _in(model, "model.head") for t in n.output if types.get(t) in (FLOAT, HALF))
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size


def test_ffexport_fp16_engine_without_tensorrt(tiny_checkpoint, tmp_path, capsys):
    """--fp16 --engine on a machine without TensorRT: both ONNX files written, exit 2, one line."""
    from ffexport.cli import main
    from ffrt.tensorrt.build import missing_for_tensorrt

    if missing_for_tensorrt() is None:
        pytest.skip("TensorRT and a GPU are present: the engine would be built (tests/gpu covers that)")
    code = main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path), "--batch-max", "8", "--fp16", "--engine",
                 "--batch-opt", "4", "--fp16-images", "16"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.fp16.onnx").is_file()
    assert read_onnx_meta(tmp_path / "model.fp16.onnx").precision == "fp16"
    # Validation data, as the INT8 and BF16 gates: held-out training normals and synthetic
    # defects drawn on them, never the test split.
    assert "fp16 vs fp32 on 32 images (16 held-out training normals of " in out and ": OK" in out
    assert "16 synthetic defects drawn on them (validation data; not the test split)" in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "TensorRT is not installed" in lines[0] and "the ONNX files are written" in lines[0]
    fp16_path = (tmp_path / "model.fp16.onnx").resolve()
    assert f"python -m ffexport.tensorrt {fp16_path} --batch-min 1 --batch-opt 4 --batch-max 8" in lines[0]
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.parametrize("map_noise, ok", [(None, False), (0.04, False), (0.06, True)])
def test_map_bound_is_the_larger_of_two_percent_and_three_times_the_models_map_noise(map_noise, ok):
    """A map error of 15% of the peak (what DeepPCB's standardized maps show under an exact FP16
    conversion) passes only where the model's own FP16 map noise makes it the conversion's due:
    bound = max(0.02 x peak, 3 x noise) = 0.18 for noise 0.06, 0.12 for 0.04, 0.02 without a reference."""
    report = fp16_gate.Fp16Report(images=64, spearman=0.9997, auroc_fp32=0.8, auroc_fp16=0.8, map_max_abs=0.15,
                                  map_max_rel=0.15, nonfinite=0, cast_fallback_ops=(), noise=1.0, score_max_abs=1.0,
                                  map_noise=map_noise)
    assert report.ok is ok
    assert report.map_bound == pytest.approx({None: 0.02, 0.04: 0.12, 0.06: 0.18}[map_noise])

