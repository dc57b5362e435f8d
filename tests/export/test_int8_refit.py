"""ffexport --int8: each INT8 file's flow head is re-fit on its own INT8 backbone's features.

Real tiny FastFlow (64x64, ELPV cells), real onnxruntime Q/DQ, real PyTorch training of the
flows on the features onnxruntime computes for the Q/DQ backbone.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ffcalib.int8 import CPU_NAME, TRT_NAME, score_images
from ffcore.metrics import roc_auc
from ffcore.ort import make_session
from ffrt.metafile import read_onnx_meta

# Stated bound: image AUROC of each re-fit INT8 file on the 460 ELPV mono test cells. The
# session's tiny checkpoint is trained on 48 normals for 2 epochs (its own AUROC is ~0.3,
# no useful reference), while the re-fit uses the checkpoint's recorded data (elpv:mono, 397
# normals), so the INT8 heads are the better detectors here: measured 0.874 (TensorRT
# encoding) and 0.886 (CPU) when written. A head that does not match its backbone scores
# ~0.5 or less. (INT8-vs-FP32 agreement is the accuracy gate's job, tested in
# tests/calibration; the demo model's figures are in benchmarks/README.md.)
MIN_AUROC = 0.75


@pytest.fixture(scope="module")
def refit_export(tiny_checkpoint, tmp_path_factory):
    from ffexport.cli import main

    out = tmp_path_factory.mktemp("int8_refit")
    rc = main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--batch-max", "8", "--int8",
               "--refit-epochs", "2", "--calib-count", "16", "--force"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def test_cells(elpv_split):
    from fftrain.data import load_batch

    # All 460 ELPV mono test cells: the tiny model's scores lie close together, so a
    # rank correlation needs many images to mean anything.
    return load_batch(elpv_split.test, 64), np.array([s.label for s in elpv_split.test])


def _flow_weights(path):
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith("flows.")}


def test_each_int8_file_carries_its_own_refit_head_and_thresholds(refit_export):
    fp32 = read_onnx_meta(refit_export / "model.onnx")
    fp32_flows = _flow_weights(refit_export / "model.onnx")
    heads = {}
    for name, target in ((TRT_NAME, "tensorrt"), (CPU_NAME, "cpu")):
        meta = read_onnx_meta(refit_export / name)
        assert (meta.precision, meta.target) == ("int8", target)
        assert meta.head_fit.startswith("flows re-fit on this file's INT8 backbone features") and target in meta.head_fit
        assert meta.thresholds.image != fp32.thresholds.image  # re-calibrated on the INT8 model's scores
        assert "validation normals" in meta.thresholds.source
        flows = _flow_weights(refit_export / name)
        assert flows.keys() == fp32_flows.keys()
        assert any(not np.array_equal(flows[k], fp32_flows[k]) for k in flows), "the head was not re-fit"
        heads[target] = flows
    # One head per encoding: each learned its own backbone's features.
    assert any(not np.array_equal(heads["tensorrt"][k], heads["cpu"][k]) for k in heads["cpu"])
    assert read_onnx_meta(refit_export / "model.onnx").head_fit == ""


def test_refit_int8_files_detect_defects(refit_export, test_cells):
    images, labels = test_cells
    for name in (TRT_NAME, CPU_NAME):
        q = score_images(make_session(refit_export / name), images)
        assert np.all(np.isfinite(q))
        assert roc_auc(labels, q) >= MIN_AUROC, name
        # The stored, re-calibrated threshold rejects few normals (target 2% on validation).
        threshold = read_onnx_meta(refit_export / name).thresholds.image
        assert np.mean(q[labels == 0] > threshold) <= 0.15, name


def test_refit_needs_the_training_data(tiny_checkpoint, tmp_path, capsys):
    from ffexport.cli import main

    folder = tmp_path / "normals"  # a plain folder has no train/val split to re-fit on
    folder.mkdir()
    import cv2

    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((64, 64, 3), 128, np.uint8))
    rc = main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "o"), "--batch-max", "8", "--int8",
               "--calib", str(folder)])
    err = capsys.readouterr().err
    assert rc == 1 and "--refit-epochs 0" in err
    # All or nothing: the FP32 file of a run whose INT8 step failed is not published either.
    assert not (tmp_path / "o" / "model.onnx").exists() and not (tmp_path / "o" / CPU_NAME).exists()


def test_min_spearman_reaches_the_gate(tiny_checkpoint, tiny_onnx, tmp_path, capsys):
    """--min-spearman is passed to ffcalib's gate: a bound no INT8 file can meet refuses them all,
    and the failed run changes nothing in the folder (the previous files stay, no temp files)."""
    import shutil

    from ffcalib.cli import EXIT_GATE
    from ffexport.cli import main

    for name in ("model.onnx", TRT_NAME, CPU_NAME):  # a previous export's files (stand-ins with known bytes)
        shutil.copy(tiny_onnx, tmp_path / name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    rc = main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path), "--batch-max", "8", "--int8",
               "--refit-epochs", "0", "--calib-count", "8", "--min-spearman", "1.0"])
    captured = capsys.readouterr()
    assert rc == EXIT_GATE and "Spearman" in captured.err
    # Item 11: the gate ran on validation data (held-out training normals + synthetic defects), and says so.
    assert "held-out training normals of elpv:mono" in captured.out and "synthetic defects" in captured.out
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.fixture(scope="module")
def refit_export_all(tiny_checkpoint, tmp_path_factory):
    from ffexport.cli import main

    out = tmp_path_factory.mktemp("int8_refit_all")
    rc = main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--batch-max", "8", "--int8", "--int8-scope", "all",
               "--refit-epochs", "2", "--calib-count", "16", "--force"])
    assert rc == 0
    return out


def test_int8_scope_all_quantizes_the_flows_of_each_refit_head_and_still_detects(refit_export, refit_export_all,
                                                                                 test_cells):
    """--int8-scope all: every convolution, the flows' included, reads INT8 (the default
    quantizes the backbone's only), each file keeps its own re-fit head, and it detects."""
    from ffcalib.graph import input_stage_convs, quantized_node_names

    fp32 = onnx.load(str(refit_export_all / "model.onnx"))
    convs = {n.name for n in fp32.graph.node if n.op_type == "Conv"}
    flow_convs = {n.name for n in fp32.graph.node if n.op_type == "Conv" and any(
        p.key == "pkg.torch.onnx.name_scopes" and "'flows." in p.value for p in n.metadata_props)}
    assert flow_convs and flow_convs < convs
    images, labels = test_cells
    for name in (TRT_NAME, CPU_NAME):
        everything = onnx.load(str(refit_export_all / name))
        backbone_only = onnx.load(str(refit_export / name))
        # Every convolution but the luma input stage (luminance + normalization), which stays float.
        assert len(input_stage_convs(fp32)) == 1
        assert set(quantized_node_names(everything)) == convs - input_stage_convs(fp32), name
        assert not set(quantized_node_names(backbone_only)) & flow_convs, name
        meta = read_onnx_meta(refit_export_all / name)
        assert meta.head_fit.startswith("flows re-fit on this file's INT8 backbone features")
        q = score_images(make_session(refit_export_all / name), images)
        assert np.all(np.isfinite(q)) and roc_auc(labels, q) >= MIN_AUROC, name


def test_uint8_input_feeds_only_a_cast_in_refit_files(refit_export):
    from support.uint8_input import assert_uint8_only_into_cast

    files = sorted(refit_export.glob("model.int8-*.onnx"))
    assert len(files) == 2, files
    for path in files:
        assert_uint8_only_into_cast(path)


def test_each_int8_file_records_its_gates_and_the_cpu_file_its_float_parts_in_bf16(refit_export, refit_export_all):
    """The INT8 gate of each file (scope backbone: the flows stayed float; scope all: the head
    only), and where this CPU computes BF16, the CPU file's gate with its float parts in BF16 on
    OpenVINO: what lets backend="auto" run it, and how (ffrt.backends.variants)."""
    from ffrt.backends.openvino import bf16_problem
    from ffrt.backends.variants import gated_variants

    for out, kept in ((refit_export, "flows"), (refit_export_all, "head")):
        for name in (TRT_NAME, CPU_NAME):
            gates = read_onnx_meta(out / name).precision_gates
            (int8,) = [g for g in gates if g.precision == "int8"]
            assert int8.keep_fp32 == kept and int8.images > 0 and "model.onnx" in int8.reference
            assert "onnxruntime" in int8.runtime
            bf16 = [g for g in gates if g.precision == "bf16"]
            if name == TRT_NAME or bf16_problem() is not None:
                assert bf16 == []
            else:
                (gate,) = bf16
                assert gate.keep_fp32 == "head" and "openvino" in gate.runtime and "model.onnx" in gate.reference
        variants, why = gated_variants(out / "model.onnx", read_onnx_meta(out / "model.onnx"))
        # --force wrote them whatever the gate said; "auto" runs the CPU file only on a passed gate.
        cpu_passed = next(g for g in read_onnx_meta(out / CPU_NAME).precision_gates if g.precision == "int8").passed
        assert [v.path.name for v in variants] == ([CPU_NAME] if cpu_passed else [])
        # its thresholds are set on FP32 float parts, so those are the only ones "auto" runs
        assert [v.precisions for v in variants] == ([("fp32",)] if cpu_passed else [])
