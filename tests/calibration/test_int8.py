"""INT8 Q/DQ quantization on the tiny real FastFlow (ELPV cells): structure, parity, gate, CLI refusals."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ffcalib.int8 import (
    CPU_NAME,
    TRT_NAME,
    AccuracyGateError,
    find_quantizable_nodes,
    quantize_model,
    score_images,
)
from ffcore.rankcorr import spearman
from ffcore.ort import make_session
from ffrt.metafile import read_onnx_meta

# Stated parity bounds of INT8 vs FP32 image scores on 48 real ELPV test cells (24 normal,
# 24 defective; tiny 64x64 model, 2 epochs, backbone convs quantized, minmax on 32 training
# normals). Score differences are stated relative to the spread of the FP32 scores on the
# same cells (their standard deviation), so the bound follows the model's score units.
# test_int8_parity_against_fp32 prints the figures; measured when set (Intel Xeon, AVX-512
# VNNI AMX, onnxruntime 1.32): FP32 scores 0.44-6.33, sd 1.67; max |diff| / sd 0.19 (trt) and
# 0.17 (cpu), mean |diff| / sd 0.074 and 0.056, Spearman 0.991 / 0.988.
# The bounds (about 2.5x the measurement) catch a broken encoding (scores moved by a sizeable
# share of the whole normal-to-defect spread, or parts re-ordered), not a fine accuracy loss:
# that is the accuracy gate's job, per model.
CPU_MIN_SPEARMAN = 0.6
#: No image's INT8 score may move by more than half the FP32 scores' standard deviation...
MAX_SCORE_DIFF_PER_SD = 0.5
#: ...and on average by no more than a fifth of it.
MEAN_SCORE_DIFF_PER_SD = 0.2


def _inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _weight_dq(model, conv):
    return _producers(model).get(conv.input[1])


def test_both_files_written_with_int8_metadata(int8_pair, tiny_onnx):
    out, report = int8_pair
    base = read_onnx_meta(tiny_onnx)
    for name, target in ((TRT_NAME, "tensorrt"), (CPU_NAME, "cpu")):
        meta = read_onnx_meta(out / name)
        assert (meta.precision, meta.target) == ("int8", target)
        assert meta.thresholds == base.thresholds and meta.input == base.input
        assert report.outputs[target] == str(out / name)
    assert report.written and report.calib_images == 32


def test_only_backbone_convs_are_quantized(int8_pair, tiny_onnx):
    out, report = int8_pair
    fp = onnx.load(str(tiny_onnx))
    backbone = find_quantizable_nodes(fp, ("Conv",), "backbone")
    all_convs = [n.name for n in fp.graph.node if n.op_type == "Conv"]
    assert 0 < len(backbone) < len(all_convs)  # the flow head's convs exist and are excluded
    assert report.quantized_nodes == backbone
    assert report.quantized_by_type == {"Conv": len(backbone)}
    assert report.float_nodes_by_type == {"Conv": len(all_convs) - len(backbone)}
    for name in (TRT_NAME, CPU_NAME):
        q = onnx.load(str(out / name))
        quantized = {n.name for n in q.graph.node if n.op_type == "Conv" and _weight_dq(q, n) is not None}
        assert quantized == set(backbone), name
        # Nothing downstream of a LayerNorm (the flows, the head) is quantized.
        ln_out = {n.output[0] for n in q.graph.node if n.op_type == "LayerNormalization"}
        users: dict[str, list] = {}
        for n in q.graph.node:
            for i in n.input:
                users.setdefault(i, []).append(n)
        seen, stack = set(), list(ln_out)
        while stack:
            t = stack.pop()
            for n in users.get(t, []):
                if n.name not in seen:
                    seen.add(n.name)
                    assert n.op_type not in ("QuantizeLinear", "DequantizeLinear"), f"{name}: Q/DQ in the flow head"
                    stack.extend(n.output)


def test_trt_encoding_is_symmetric_int8_per_channel_float_bias(int8_pair):
    out, _ = int8_pair
    q = onnx.load(str(out / TRT_NAME))
    inits = _inits(q)
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point must be int8 0 for TensorRT"
    for conv in (n for n in q.graph.node if n.op_type == "Conv" and _weight_dq(q, n) is not None):
        dq = _weight_dq(q, conv)
        w = inits[dq.input[0]]
        scale = inits[dq.input[1]]
        assert w.dtype == np.int8 and w.min() >= -127  # TensorRT's weight range is [-127, 127]
        assert scale.shape == (w.shape[0],), "per-channel weight scales (one per output channel)"
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0
        if len(conv.input) > 2:
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32, "bias stays float"


def test_cpu_encoding_is_u8_activations_s8_per_channel_weights(int8_pair):
    out, _ = int8_pair
    q = onnx.load(str(out / CPU_NAME))
    inits = _inits(q)
    act_q = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert act_q
    zps = [inits[n.input[2]] for n in act_q]
    assert all(z.dtype == np.uint8 for z in zps)
    assert any(int(z.max()) > 0 for z in zps), "asymmetric activations carry zero points"
    for conv in (n for n in q.graph.node if n.op_type == "Conv" and _weight_dq(q, n) is not None):
        dq = _weight_dq(q, conv)
        w, scale, zp = inits[dq.input[0]], inits[dq.input[1]], inits[dq.input[2]]
        assert w.dtype == np.int8 and zp.dtype == np.int8 and not zp.any()
        assert scale.shape == (w.shape[0],)


def test_int8_parity_against_fp32(int8_pair, tiny_onnx, val_set):
    out, report = int8_pair
    images, labels = val_set
    fp = score_images(make_session(tiny_onnx), images)
    sd = float(np.std(fp))
    print(f"\nFP32 scores {fp.min():.3f}..{fp.max():.3f}, sd {sd:.3f}")
    for name in (TRT_NAME, CPU_NAME):  # both run on ONNX Runtime CPU
        q = score_images(make_session(out / name), images)
        assert np.all(np.isfinite(q))
        diff = np.abs(q - fp) / sd
        print(f"{name}: max |diff| / sd {diff.max():.3f}, mean |diff| / sd {diff.mean():.3f}, "
              f"Spearman {spearman(fp, q):.3f}")
        assert diff.max() <= MAX_SCORE_DIFF_PER_SD and diff.mean() <= MEAN_SCORE_DIFF_PER_SD, name
    cpu = score_images(make_session(out / CPU_NAME), images)
    assert spearman(fp, cpu) >= CPU_MIN_SPEARMAN
    # The report's figure is the same measurement: Spearman = Pearson of the ranks (the
    # float scores have no ties here, so argsort-of-argsort ranks are exact).
    assert len(np.unique(fp)) == len(fp) and len(np.unique(cpu)) == len(cpu)
    rho = np.corrcoef(np.argsort(np.argsort(fp)), np.argsort(np.argsort(cpu)))[0, 1]
    assert report.accuracy.encodings["cpu"].spearman == pytest.approx(rho, abs=1e-9)
    assert report.accuracy.fp32_auroc is not None and report.accuracy.images == len(labels)


def test_spearman_matches_definition():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a * 10) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # ties: average ranks


def test_gate_refuses_and_writes_nothing(tiny_onnx, val_set, tmp_path):
    # Calibrating on black frames (a wrong calibration folder) saturates every activation.
    images, labels = val_set
    black = np.zeros((8, 64, 64, 3), np.uint8)
    with pytest.raises(AccuracyGateError) as e:
        quantize_model(tiny_onnx, tmp_path, black, val_images=images, val_labels=labels, benchmark_batches=(), progress=False)
    assert "accuracy gate failed" in str(e.value)
    assert not e.value.report.accuracy.passed and not e.value.report.written
    assert not (tmp_path / TRT_NAME).exists() and not (tmp_path / CPU_NAME).exists()


def test_cli_int8_gate_failure_exit_code(tiny_onnx, tmp_path, capsys):
    from ffcalib.cli import EXIT_GATE, main

    calib = tmp_path / "black"
    calib.mkdir()
    import cv2

    for i in range(4):
        cv2.imwrite(str(calib / f"{i}.png"), np.zeros((64, 64, 3), np.uint8))
    # The val folder (normals only) gates on rank correlation; demand a perfect one.
    rc = main(["int8", "--model", str(tiny_onnx), "--calib", str(calib), "--val", "elpv:mono", "--val-count", "24",
               "--bench-batches", "", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_GATE and err.startswith("ffcalib: error: INT8 accuracy gate failed") and "\n" not in err
    assert not (tmp_path / "o" / CPU_NAME).exists()


def test_cli_int8_refuses_empty_folder_and_foreign_model(tiny_onnx, tmp_path, capsys):
    from ffcalib.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["int8", "--model", str(tiny_onnx), "--calib", str(empty), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "contains no images" in err and "\n" not in err

    plain = onnx.load(str(tiny_onnx))
    del plain.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(plain, str(foreign))
    assert main(["int8", "--model", str(foreign), "--calib", "elpv:mono", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "not an ffrt model" in err and "\n" not in err


def _dead_channel_conv(tmp_path):
    """One Conv (2 -> 3 channels) whose channel 1 is 'dead' like a BN-folded channel with
    gamma ~ 0 (weights 1e-7) but carries a large bias (5.0), as in the real backbone."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (3, 2, 3, 3)).astype(np.float32)
    w[1] = 1e-7
    b = np.array([0.1, 5.0, -0.2], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "dead_channel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "dead.onnx"
    onnx.save(model, str(path))
    return path, w, b


def test_float_bias_survives_onnxruntime_bias_quantization(tmp_path):
    """TensorRT encoding (float bias) run on ONNX Runtime CPU with all graph optimizations:
    ORT quantizes a float Conv bias to int32 with scale s_x * s_w at load (PR #22889); protect_float_bias
    keeps that within int32, so the dead channel still outputs its bias (5.0)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from ffcalib.encode import ENCODINGS, protect_float_bias

    src, w, b = _dead_channel_conv(tmp_path)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 1, 2, 8, 8)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": xi} for xi in x])

        def get_next(self):
            return next(self.it, None)

    _, _, options = ENCODINGS["tensorrt"]
    dst = tmp_path / "q.onnx"
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, extra_options=options)
    q = onnx.load(str(dst))
    inits = _inits(q)
    s_x = float(next(v for k, v in inits.items() if k.startswith("x") and k.endswith("scale")).reshape(-1)[0])
    s_w = next(v for k, v in inits.items() if k.startswith("w") and k.endswith("scale"))
    # The hazardous case: onnxruntime's tool sizes s_w so the int32 bias just fits (PR #22020),
    # which leaves no headroom for the int32 accumulator the fused kernel adds products to.
    assert abs(b[1]) / (s_x * s_w[1]) > 2**30

    assert protect_float_bias(q, onnx.load(str(src))) == 1  # only the dead channel changes
    s_w_new = next(v for k, v in _inits(q).items() if k.startswith("w") and k.endswith("scale"))
    assert abs(b[1]) / (s_x * s_w_new[1]) <= 2**30
    np.testing.assert_array_equal(s_w_new[[0, 2]], s_w[[0, 2]])

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(q.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    for xi in x:
        y, y_fp = session.run(None, {"x": xi})[0], reference.run(None, {"x": xi})[0]
        # Dead channel: its bias, to int32-bias rounding (s_x * new s_w <= |b| / 2^30).
        np.testing.assert_allclose(y[0, 1], 5.0, atol=1e-3)
        # Live channels: INT8 quantization error only (inputs in [-1, 1], 18 taps).
        assert np.abs(y - y_fp).max() < 0.05


def test_backbone_submodel_outputs_the_layernorm_inputs(tiny_onnx):
    from ffcalib.int8 import backbone_boundary, backbone_submodel

    fp = onnx.load(str(tiny_onnx))
    sub = backbone_submodel(fp)
    assert [o.name for o in sub.graph.output] == backbone_boundary(fp)
    assert not any(n.op_type in ("LayerNormalization", "TopK", "Resize") for n in sub.graph.node)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    feats = make_session(sub.SerializeToString()).run(None, {"image": images})
    assert [f.shape[0] for f in feats] == [2, 2, 2] and [f.shape[1] for f in feats] == [24, 40, 112]


def test_qdq_placement_per_target(int8_pair):
    """TensorRT: Q/DQ on quantized Conv inputs only (outputs float, the builder fuses). CPU:
    Conv outputs quantized for QLinearConv, with the ReLU6 Clip folded into that output Q."""
    out, _ = int8_pair
    trt = onnx.load(str(out / TRT_NAME))
    trt_producer = _producers(trt)
    clips = [n for n in trt.graph.node if n.op_type == "Clip"]
    assert clips
    for clip in clips:  # the pre-ReLU6 conv outputs are not quantized...
        assert trt_producer[clip.input[0]].op_type == "Conv", clip.name
    for n in (n for n in trt.graph.node if n.op_type == "Conv" and _weight_dq(trt, n) is not None):
        assert trt_producer[n.input[0]].op_type == "DequantizeLinear"  # ...their inputs are

    cpu = onnx.load(str(out / CPU_NAME))
    producer = _producers(cpu)
    quantized = {n.name for n in cpu.graph.node if n.op_type == "Conv" and _weight_dq(cpu, n) is not None}
    clips_after_quantized = [n for n in cpu.graph.node if n.op_type == "Clip"
                             and (p := producer.get(n.input[0])) is not None and p.name in quantized]
    assert not clips_after_quantized, "ReLU6 after a quantized Conv must be folded into its output Q"
    fp_clips = sum(n.op_type == "Clip" for n in trt.graph.node)
    assert sum(n.op_type == "Clip" for n in cpu.graph.node) < fp_clips


# -- item 11: the gate runs on validation data, never silently on the test split ------------------


def test_cli_int8_default_gate_is_held_out_normals_plus_synthetic_defects(tiny_onnx, tmp_path, capsys):
    import json

    from ffcalib.cli import main
    from fftrain.data import elpv

    split = elpv("mono")  # the data definition the trainer holds out from (every 10th training normal)
    report_path = tmp_path / "report.json"
    rc = main(["int8", "--model", str(tiny_onnx), "--calib", "elpv:mono", "--calib-count", "8", "--bench-batches", "",
               "--force", "--out", str(tmp_path), "--json", str(report_path), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    acc = json.loads(report_path.read_text())["accuracy"]
    # Each held-out normal once as it is and once with a drawn defect; none of the 460 test cells.
    assert acc["images"] == 2 * len(split.val) and acc["defects"] == len(split.val)
    assert acc["images"] != len(split.test)
    assert f"{len(split.val)} held-out training normals of elpv:mono + {len(split.val)} synthetic defects" in acc["source"]
    assert "gate set: " + acc["source"] in out


def test_cli_int8_plain_folder_holds_out_every_tenth_image(tiny_onnx, elpv_split, tmp_path, capsys):
    import json

    from ffcalib.cli import main

    folder = tmp_path / "normals"
    folder.mkdir()
    for s in elpv_split.train[:20]:
        shutil.copy(s.path, folder / s.path.name)
    report_path = tmp_path / "report.json"
    rc = main(["int8", "--model", str(tiny_onnx), "--calib", str(folder), "--calib-count", "0", "--bench-batches", "",
               "--force", "--out", str(tmp_path / "o"), "--json", str(report_path), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["calib_images"] == 18  # the 2 held-out images are not calibrated on
    assert report["accuracy"]["images"] == 4 and report["accuracy"]["defects"] == 2
    assert "synthetic defects" in report["accuracy"]["source"]


def test_cli_int8_explicit_val_is_named_in_the_report(tiny_onnx, tmp_path, capsys):
    from ffcalib.cli import main

    rc = main(["int8", "--model", str(tiny_onnx), "--calib", "elpv:mono", "--calib-count", "8", "--val", "elpv:mono",
               "--val-count", "12", "--bench-batches", "", "--force", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert "gate set: --val elpv:mono: 12 images" in capsys.readouterr().out


def test_cli_int8_too_few_normals_for_a_default_gate(tiny_onnx, elpv_split, tmp_path, capsys):
    from ffcalib.cli import main

    folder = tmp_path / "few"
    folder.mkdir()
    for s in elpv_split.train[:12]:  # one held-out image: not enough for a gate
        shutil.copy(s.path, folder / s.path.name)
    assert main(["int8", "--model", str(tiny_onnx), "--calib", str(folder), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "held out for the accuracy gate" in err and "--val" in err and "\n" not in err
    assert not (tmp_path / CPU_NAME).exists()


def test_int8_files_are_written_both_or_neither(tmp_path):
    """A failure while writing the second file leaves the first one's previous bytes."""
    from ffcore.files import write_all_or_none

    first = tmp_path / TRT_NAME
    first.write_bytes(b"previous int8-trt")
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        write_all_or_none({first: b"new int8-trt", blocker / CPU_NAME: b"new int8-cpu"})
    assert first.read_bytes() == b"previous int8-trt"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, blocker.name])


def test_uint8_input_feeds_only_a_cast_in_both_encodings(int8_pair):
    """TensorRT takes a uint8 network input only into a Cast; the CPU file keeps the same input stage."""
    from support.uint8_input import assert_uint8_only_into_cast

    out, _ = int8_pair
    for name in (TRT_NAME, CPU_NAME):
        assert_uint8_only_into_cast(out / name)


def _ranks(x):
    """Ranks 0..n-1 (the gate's images have no tied scores here: checked)."""
    x = np.asarray(x, np.float64)
    assert len(np.unique(x)) == len(x)
    return np.argsort(np.argsort(x)).astype(np.float64)


def test_each_file_records_its_own_int8_gate(int8_pair, tiny_onnx, val_set):
    """The gate that decided the files is in each file (what lets backend="auto" run the CPU
    file, ffrt.backends.variants): recomputed here from the files' own scores on ONNX Runtime."""
    out, _ = int8_pair
    images, labels = val_set
    fp = score_images(make_session(tiny_onnx), images, progress=False)
    for name in (TRT_NAME, CPU_NAME):
        gates = read_onnx_meta(out / name).precision_gates
        assert len(gates) == 1, gates
        gate = gates[0]
        q = score_images(make_session(out / name), images, progress=False)
        rho = float(np.corrcoef(_ranks(fp), _ranks(q))[0, 1])
        assert (gate.precision, gate.keep_fp32) == ("int8", "flows")  # backbone scope: the flows stayed float
        assert (gate.images, gate.defective) == (48, 24)
        assert gate.spearman == pytest.approx(rho, abs=1e-9)
        assert gate.auroc_fp32 == pytest.approx(_auroc(labels, fp)) and gate.auroc == pytest.approx(_auroc(labels, q))
        assert gate.passed == (rho >= 0.95 and _auroc(labels, fp) - _auroc(labels, q) <= 0.01)
        assert "onnxruntime" in gate.runtime and gate.reference.startswith(tiny_onnx.name)


def _auroc(labels, scores):
    """Share of (defective, normal) pairs ranked right, ties half."""
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg)))


def test_a_forced_file_records_its_failed_gate_and_auto_leaves_it_out(tiny_onnx, val_set, tmp_path):
    """--force writes files whose gate failed; the failure is recorded, so "auto" never runs them."""
    from ffrt.backends.variants import gated_variants

    images, labels = val_set
    shutil.copy(tiny_onnx, tmp_path / "model.onnx")
    black = np.zeros((8, 64, 64, 3), np.uint8)  # saturates every activation: the gate fails
    report = quantize_model(tmp_path / "model.onnx", tmp_path, black, val_images=images, val_labels=labels,
                            force=True, benchmark_batches=(), progress=False)
    assert report.written and not report.accuracy.passed
    gate = read_onnx_meta(tmp_path / CPU_NAME).precision_gates[0]
    assert gate.precision == "int8" and not gate.passed
    variants, why = gated_variants(tmp_path / "model.onnx", read_onnx_meta(tmp_path / "model.onnx"))
    assert variants == [] and len(why) == 1 and "no passed INT8 accuracy gate" in why[0]
