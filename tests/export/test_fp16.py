"""FP16 export: mixed precision decided in the ONNX, verified on CPU with real images.

Runs the real converter on the tiny FastFlow trained on real ELPV cells (tests/conftest.py)
and executes every graph with the real onnxruntime. Tolerances are ffexport's own
(FP16_MIN_SPEARMAN, FP16_MAX_AUROC_DIFF, FP16_MAX_MAP_REL in ffexport.precision).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ffexport.precision import (
    FP16_MAX_AUROC_DIFF,
    FP16_MAX_MAP_REL,
    FP16_MIN_SPEARMAN,
    PrecisionError,
    _name_nodes,
    auroc,
    compare,
    emulate_fp16_storage,
    fp32_tensors_of_head,
    head_nodes,
    run_cpu,
    spearman,
    to_mixed_fp16,
    write_fp16,
)
from ffrt.meta import read_onnx_meta

FP16_MAX = 65504.0


@pytest.fixture(scope="module")
def fp16(tiny_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    path, model, kept = write_fp16(tiny_onnx, out)
    return path, model, kept


@pytest.fixture(scope="module")
def labelled(elpv_split):
    """32 normal + 32 defective real ELPV test cells at the tiny model's size."""
    from fftrain.data import load_batch

    good = [s for s in elpv_split.test if s.label == 0][:32]
    bad = [s for s in elpv_split.test if s.label == 1][:32]
    return load_batch(good + bad, 64), np.array([0] * len(good) + [1] * len(bad))


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    t = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    t.update({v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)})
    t.update({i.name: i.data_type for i in model.graph.initializer})
    return t


def test_io_unchanged_and_metadata(tiny_onnx, fp16):
    path, model, kept = fp16
    fp32 = onnx.load(str(tiny_onnx))
    sig = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]  # noqa: E731
    assert sig(model) == sig(fp32) == [("image", TensorProto.UINT8), ("anomaly_map", TensorProto.FLOAT), ("score", TensorProto.FLOAT)]
    meta, meta32 = read_onnx_meta(path), read_onnx_meta(tiny_onnx)
    assert meta.precision == "fp16" and meta32.precision == "fp32"
    assert meta.thresholds == meta32.thresholds and meta.input == meta32.input
    assert path.stat().st_size < 0.6 * tiny_onnx.stat().st_size  # weights really halved


def test_head_fp32_body_fp16(fp16):
    _, model, kept = fp16
    ops = {n.name: n.op_type for n in model.graph.node}
    kept_ops = {ops[k] for k in kept}
    # the squares of z, their channel mean, upsampling, fusion and the top-k score
    assert {"Mul", "ReduceMean", "Resize", "TopK"} <= kept_ops
    assert sum(1 for k in kept if ops[k] == "Mul") >= 3 and sum(1 for k in kept if ops[k] == "Resize") == 3
    head_types = fp32_tensors_of_head(model, kept)
    assert head_types and set(head_types.values()) == {TensorProto.FLOAT}, {
        k: v for k, v in head_types.items() if v != TensorProto.FLOAT
    }
    types = _types(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) > 20
    assert all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs), "every backbone/flow conv weight is FP16"
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in convs)
    lns = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert lns and all(types[n.output[0]] == TensorProto.FLOAT16 for n in lns)
    # z reaches the head through exactly one FP16 -> FP32 cast per scale
    squares = [n for n in model.graph.node if n.name in kept and n.op_type == "Mul" and n.input[0] == n.input[1]]
    producers = {o: n for n in model.graph.node for o in n.output}
    for sq in squares:
        cast = producers[sq.input[0]]
        assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
        assert types[cast.input[0]] == TensorProto.FLOAT16


def test_head_boundary_needs_a_square():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    with pytest.raises(PrecisionError, match="no z\\*z node"):
        to_mixed_fp16(model)


def test_rank_and_auroc_helpers():
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.3, 0.0])) == pytest.approx(0.375)
    assert auroc(np.array([0, 0]), np.array([0.1, 0.2])) is None


def test_fp16_matches_fp32_on_real_elpv(tiny_onnx, fp16, labelled, tmp_path, capsys):
    _, model, kept = fp16
    images, labels = labelled
    report = compare(tiny_onnx, model, images, labels, tmp_path, kept)
    with capsys.disabled():
        print(f"\n  {report}")
    assert report.nonfinite == 0
    assert report.spearman >= FP16_MIN_SPEARMAN
    assert report.auroc_diff is not None and report.auroc_diff <= FP16_MAX_AUROC_DIFF
    assert report.map_max_rel <= FP16_MAX_MAP_REL
    assert report.ok
    # The FP16 graph is really different from FP32 (the check would notice a no-op).
    assert report.map_max_abs > 0
    # onnxruntime CPU has no FP16 kernel for the convolutions here: say so, don't hide it.
    assert "Conv" in report.cast_fallback_ops


def test_storage_emulation_rounds_like_fp16(tiny_onnx, fp16, real_images):
    """The emulation really rounds activations (else the CPU check would be toothless)."""
    _, model, kept = fp16
    fp32 = onnx.load(str(tiny_onnx))
    m32, _ = run_cpu(str(tiny_onnx), real_images)
    emu, _ = run_cpu(emulate_fp16_storage(fp32, kept).SerializeToString(), real_images, optimize=False)
    err = np.abs(emu - m32).max() / np.abs(m32).max()
    assert 1e-5 < err < FP16_MAX_MAP_REL


def _head_model(fp32: onnx.ModelProto):
    """The shipped head (every node from z*z on), cut out of the exported graph: z in, map/score out."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    _name_nodes(model.graph)
    head = set(head_nodes(model))
    squares = [n for n in model.graph.node if n.name in head and n.op_type == "Mul" and n.input[0] == n.input[1]]
    zs = [n.input[0] for n in squares]
    produced = {o for n in model.graph.node if n.name not in head for o in n.output}
    nodes = [n for n in model.graph.node if n.name in head]
    # constants the head reads from outside (Constant nodes), copied along
    needed = {i for n in nodes for i in n.input} & produced - set(zs)
    consts = [n for n in model.graph.node if n.name not in head and set(n.output) & needed]
    assert all(n.op_type == "Constant" for n in consts), [n.op_type for n in consts]
    inputs = [helper.make_tensor_value_info(z, TensorProto.FLOAT, None) for z in zs]
    used = {i for n in nodes + consts for i in n.input}
    graph = helper.make_graph(consts + nodes, "head", inputs, list(model.graph.output),
                              initializer=[t for t in model.graph.initializer if t.name in used])
    out = helper.make_model(graph, opset_imports=list(fp32.opset_import))
    out.ir_version = fp32.ir_version
    return out, zs


def _z_outputs(fp32: onnx.ModelProto, zs: list[str]) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    for z in zs:
        model.graph.output.append(helper.make_tensor_value_info(z, TensorProto.FLOAT, None))
    return model


def _run(model: onnx.ModelProto, feeds: dict, optimize: bool = True):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_strong_defect_overflow(tiny_onnx, fp16, real_images, capsys):
    """A naive all-FP16 graph overflows on a strong defect; the shipped mixed graph does not.

    FP16 tops out at 65504, so z*z overflows as soon as |z| > 255.9. The tiny 2-epoch test
    model's flows do not produce such z on any uint8 input (measured below), so the defect
    is made strong where it matters: real z of real cells, with a 16x16-pixel patch of the
    stride-4 feature map set to |z| = 300 (300 sigma: a strong defect for a trained flow),
    fed through the *shipped* head nodes cut out of the exported graph.
    """
    _, model16, kept = fp16
    fp32 = onnx.load(str(tiny_onnx))
    head32, zs = _head_model(fp32)

    # 1) The full model on a strong synthetic image defect: measure z, check FP16 is finite.
    defect = real_images[:4].copy()
    defect[:, 16:48, 16:48] = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    defect[:, 24:40, 24:40] = 255
    outs = _run(_z_outputs(fp32, zs), {"image": defect})
    z_real = outs[2:]
    zmax = max(float(np.abs(z).max()) for z in z_real)
    m16, s16 = run_cpu(model16.SerializeToString(), defect)
    assert np.isfinite(m16).all() and np.isfinite(s16).all()

    # 2) The same real z with a strong defect patch, through the shipped head.
    z_def = [z.copy() for z in z_real]
    z_def[0][:, :, 4:8, 4:8] = 300.0 * np.where(z_def[0][:, :, 4:8, 4:8] < 0, -1.0, 1.0)
    feeds = dict(zip(zs, z_def))
    map32, score32 = _run(head32, feeds)
    # The FP32 head stays finite and shows the defect. (A standardized map, the default, can
    # itself exceed FP16's range once divided by a small normal spread: one more reason the
    # head, standardization included, stays FP32.)
    assert np.isfinite(map32).all() and map32.max() > 1000
    assert (300.0**2) > FP16_MAX  # z*z does not fit FP16

    # Mixed head (as shipped): it is the FP32 head, so it must give the FP32 answer exactly.
    mixed_head, kept_head = to_mixed_fp16(head32)
    assert set(fp32_tensors_of_head(mixed_head, kept_head).values()) == {TensorProto.FLOAT}
    map_mixed, score_mixed = _run(mixed_head, feeds)
    assert np.isfinite(map_mixed).all() and np.array_equal(map_mixed, map32) and np.array_equal(score_mixed, score32)

    # Naive all-FP16 head, with FP16 storage of z*z (the emulation; what a GPU stores).
    naive_emu = emulate_fp16_storage(head32, None)
    map_naive, score_naive = _run(naive_emu, feeds, optimize=False)
    inf_px = int(np.isinf(map_naive).sum())
    assert inf_px > 0 and not np.isfinite(score_naive).all()
    # The naive FP16 *file* on onnxruntime CPU: ORT computes the FP16 Mul/ReduceMean in FP32
    # (no CPU FP16 kernels) and drops the casts between them, so it does NOT show the overflow.
    naive_file, _ = to_mixed_fp16(head32, block_head=False)
    map_file, _ = _run(naive_file, feeds)
    with capsys.disabled():
        print(
            f"\n  overflow test: tiny model max|z| on a strong image defect {zmax:.3g} (z^2 {zmax**2:.3g}, far below "
            f"{FP16_MAX:g}); with a |z|=300 patch: FP32 map max {map32.max():.6g}, mixed FP16 graph finite and identical, "
            f"naive all-FP16 (FP16 storage) {inf_px} inf map pixels, scores {score_naive.tolist()}; naive FP16 file on "
            f"ORT CPU: {int(np.isinf(map_file).sum())} inf pixels (ORT CPU computes FP16 ops in FP32)"
        )


def test_ffexport_fp16_engine_without_tensorrt(tiny_checkpoint, tmp_path, capsys):
    """--fp16 --engine on a machine without TensorRT: both ONNX files written, exit 2, one line."""
    from ffexport.cli import main
    from ffrt.engine import missing_for_tensorrt

    if missing_for_tensorrt() is None:
        pytest.skip("TensorRT and a GPU are present: the engine would be built (tests/gpu covers that)")
    code = main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path), "--batch-max", "8", "--fp16", "--engine",
                 "--batch-opt", "4", "--fp16-images", "16"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.fp16.onnx").is_file()
    assert read_onnx_meta(tmp_path / "model.fp16.onnx").precision == "fp16"
    assert "fp16 vs fp32 on 32 images" in out and ": OK" in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "TensorRT is not installed" in lines[0] and "the ONNX files are written" in lines[0]
    fp16_path = (tmp_path / "model.fp16.onnx").resolve()
    assert f"python -m ffexport.tensorrt {fp16_path} --batch-min 1 --batch-opt 4 --batch-max 8" in lines[0]
    assert not list(tmp_path.glob("*.engine"))
