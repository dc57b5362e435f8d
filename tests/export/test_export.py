"""The fused ONNX graph: one file, self-describing, dynamic batch, same numbers as PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ffexport.cli import main as ffexport_main
from ffexport.parity import FP32_RTOL, check
from ffrt.metafile import read_onnx_meta
from fftrain import checkpoint
from fftrain.data import to_tensor_batch


def test_one_file_with_the_contracted_inputs_and_outputs(tiny_onnx):
    assert not list(tiny_onnx.parent.glob("*.data"))  # weights embedded
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(uint8)", ["batch", 64, 64, 3])
    outs = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    assert outs == {"anomaly_map": ("tensor(float)", ["batch", 1, 64, 64]), "score": ("tensor(float)", ["batch"])}
    model = onnx.load(str(tiny_onnx))
    assert model.opset_import[0].version >= 17
    # Thresholds live in metadata, not in the graph: nothing compares against them in-graph.
    assert not {n.op_type for n in model.graph.node} & {"Greater", "Less", "Where"}


def _scopes(node) -> str:
    return next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")


def test_flows_ship_as_convolutions_and_elementwise_ops_only(tiny_onnx, tiny_checkpoint):
    """The shipped flows (fftrain.fused_flow) have no channel gather, split or concatenation
    per step, and the head no full-size resize: CPU runtimes run those as layout-breaking
    copies (benchmarks/peers has the profile)."""
    model = onnx.load(str(tiny_onnx))
    flows = [n for n in model.graph.node if "'flows." in _scopes(n)]
    kinds = {n.op_type for n in flows}
    assert {"Conv", "Tanh", "Exp"} <= kinds <= {"Conv", "Add", "Mul", "Relu", "Tanh", "Exp", "Slice"}, kinds
    # Two slices per scale (the features' halves, once before the first step), none per step.
    assert sum(n.op_type == "Slice" for n in flows) == 2 * 3
    steps = checkpoint.load(tiny_checkpoint)[0].config.flow_steps
    # per step: 3 subnet convs (hidden, scale, shift) + 4 mixing convs, the last step without mixing
    assert sum(n.op_type == "Conv" for n in flows) == 3 * (7 * steps - 4)
    assert not {n.op_type for n in model.graph.node} & {"Gather", "Split", "Resize", "Upsample"}


def test_metadata_describes_the_checkpoint(tiny_onnx, tiny_checkpoint, capsys):
    meta = read_onnx_meta(tiny_onnx)
    payload = checkpoint.load_payload(tiny_checkpoint)
    assert meta.source_checkpoint_sha256 == checkpoint.sha256(tiny_checkpoint)
    assert (meta.input.height, meta.input.width, meta.input.color_order) == (64, 64, "RGB")
    assert meta.thresholds.image == payload["calibration"]["image_threshold"]
    assert meta.thresholds.pixel == payload["calibration"]["pixel_threshold"]
    assert meta.backbone.name == "efficientnet_lite0" and meta.backbone.pretrained
    assert meta.precision == "fp32" and meta.batch_max == 8 and meta.feature_strides == (4, 8, 16)
    assert meta.score.strides == (8, 16)  # the default: the score fuses strides 8 and 16, the map all three
    bank = payload["config"]
    assert (meta.score.memory_bank.stride, meta.score.memory_bank.vectors, meta.score.memory_bank.weight,
            meta.score.memory_bank.map_weight) == \
        (16, bank["memory_bank_vectors"], bank["memory_bank_weight"], bank["memory_bank_map_weight"])
    assert bank["memory_bank_map_weight"] > 0  # conftest: "on" puts the bank in the map too
    from ffrt.cli import main as ffrt_main

    assert meta.flow.feature_pooling == 1
    assert ffrt_main(["info", str(tiny_onnx)]) == 0
    printed = capsys.readouterr().out
    assert "of the map fused from strides 8, 16 only" in printed and "cells;" not in printed
    assert f"plus a memory bank's nearest-patch distance (stride 16, {bank['memory_bank_vectors']} normal patches" in printed
    assert f"{bank['memory_bank_map_weight']:g} in the map)" in printed


def test_the_graphs_score_is_the_top_1_percent_of_strides_8_and_16(tiny_onnx, tiny_checkpoint, real_images):
    """Recomputed step by step from the checkpoint's per-scale maps (interpolate, mean, top 1%),
    not by the head's fusion matrices, plus the memory bank's weighted distance from the most
    unusual 3x3-mean stride-16 patch to its nearest bank vector (torch.cdist); and it differs
    from the top 1% of the map returned."""
    model, _ = checkpoint.load(tiny_checkpoint)
    assert model.bank is not None  # conftest: the tiny model has one
    with torch.no_grad():
        feats = model.extract(to_tensor_batch(real_images))
        maps = model.head.scale_maps(model.head_inputs(*model.flow(feats)))
        pooled = torch.nn.functional.avg_pool2d(feats[2], 3, stride=1, padding=1, count_include_pad=False)
        vectors = model.bank.bank + model.bank.center
        bank_term = torch.stack([torch.cdist(p.flatten(1).T, vectors).min(1).values.max() for p in pooled])
        deep = [torch.nn.functional.interpolate(m, size=(64, 64), mode="bilinear", align_corners=False)
                for m in maps[1:]]
        fused = (deep[0] + deep[1]) / 2
        if model.head.blur_sigma > 0:
            fused = model.head.blur(fused)
        k = max(1, int(np.ceil(0.01 * 64 * 64)))
        flows = torch.topk(fused.flatten(1), k, dim=1).values.mean(1).numpy()
        expected = flows + float(model.bank.gain) * bank_term.numpy()
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    amap, score = session.run(None, {"image": real_images})
    scale = float(np.abs(expected).max())
    assert np.abs(score - expected).max() <= FP32_RTOL * scale
    assert np.abs(score - flows).max() > 10 * FP32_RTOL * scale  # the bank counts
    of_the_map = np.sort(amap.reshape(len(amap), -1), axis=1)[:, -k:].mean(axis=1)
    assert np.abs(of_the_map - flows).max() > 10 * FP32_RTOL * scale


def test_the_graphs_map_adds_the_banks_distance_map(tiny_onnx, tiny_checkpoint, real_images):
    """Recomputed from the checkpoint's per-scale maps (interpolate, mean of the three strides)
    plus map_gain x (each 3x3-mean stride-16 patch's distance to its nearest bank vector
    (torch.cdist), upsampled, - map_offset)."""
    model, _ = checkpoint.load(tiny_checkpoint)
    assert model.bank is not None and model.bank.in_map
    with torch.no_grad():
        feats = model.extract(to_tensor_batch(real_images))
        maps = model.head.scale_maps(model.head_inputs(*model.flow(feats)))
        up = [torch.nn.functional.interpolate(m, size=(64, 64), mode="bilinear", align_corners=False) for m in maps]
        flows = sum(up) / len(up)
        if model.head.blur_sigma > 0:
            flows = model.head.blur(flows)
        pooled = torch.nn.functional.avg_pool2d(feats[2], 3, stride=1, padding=1, count_include_pad=False)
        vectors = model.bank.bank + model.bank.center
        nearest = torch.stack([torch.cdist(p.flatten(1).T, vectors).min(1).values for p in pooled])
        grid = nearest.reshape(len(pooled), 1, *pooled.shape[-2:])
        bank_map = torch.nn.functional.interpolate(grid, size=(64, 64), mode="bilinear", align_corners=False)
        expected = (flows + float(model.bank.map_gain) * (bank_map - float(model.bank.map_offset))).numpy()
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    amap, _ = session.run(None, {"image": real_images})
    scale = float(np.abs(expected).max())
    assert np.abs(amap - expected).max() <= FP32_RTOL * scale
    assert np.abs(amap - flows.numpy()).max() > 10 * FP32_RTOL * scale  # the bank's map counts


def test_parity_with_pytorch_on_real_images(tiny_onnx, tiny_checkpoint, real_images):
    model, _ = checkpoint.load(tiny_checkpoint)
    report = check(model, tiny_onnx, real_images)
    assert report.ok, str(report)
    assert report.map_max_rel <= FP32_RTOL and report.score_max_rel <= FP32_RTOL
    # The check can fail: a graph fed differently normalized images disagrees.
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    _, onnx_scores = session.run(None, {"image": real_images})
    with torch.no_grad():
        _, shifted = model(to_tensor_batch(real_images) * 0.9)
    assert np.abs(onnx_scores - shifted.numpy()).max() / np.abs(onnx_scores).max() > FP32_RTOL


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_dynamic_batch(tiny_onnx, real_images, batch):
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    images = np.concatenate([real_images] * 2)[:batch]
    amap, score = session.run(None, {"image": images})
    assert amap.shape == (batch, 1, 64, 64) and score.shape == (batch,)
    assert np.isfinite(amap).all()
    if "standardized" in read_onnx_meta(tiny_onnx).score.map_units:
        # Standardized by what good cells show at each place: real good cells sit near 0,
        # below and above it.
        assert (amap < 0).any() and abs(float(np.median(amap))) < 3
    else:
        assert (amap >= 0).all()  # a plain NLL map is a sum of squares
    single = session.run(None, {"image": images[:1]})[1]
    np.testing.assert_allclose(score[0], single[0], rtol=1e-5)


def test_a_one_image_batch_limit_exports_and_runs(tiny_checkpoint, real_images, tmp_path):
    """--batch-max 1 (one camera, one frame at a time) once crashed in torch.export with a traceback."""
    from ffrt import Detector

    assert ffexport_main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(tmp_path), "--batch-max", "1"]) == 0
    assert read_onnx_meta(tmp_path / "model.onnx").batch_max == 1
    with Detector(tmp_path / "model.onnx", backend="onnxruntime-cpu") as det:
        results = det.predict_batch(list(real_images[:3]))  # chunks of one image each
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    single = session.run(None, {"image": real_images[1:2]})[1]
    assert len(results) == 3 and results[1].score == pytest.approx(float(single[0]), rel=1e-5)


def test_conflicting_precisions_exit_with_one_line(tiny_checkpoint, tmp_path, capsys):
    for pair in (["--int8", "--fp16"], ["--bf16", "--int8"], ["--fp16", "--bf16"]):
        assert ffexport_main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "a"), *pair]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("ffexport: error: choose one of --fp16, --int8 and --bf16") and "\n" not in err
        assert not (tmp_path / "a").exists()  # nothing half-written


def test_engine_request_still_writes_the_onnx(tiny_checkpoint, tmp_path, capsys):
    assert ffexport_main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(tmp_path), "--engine"]) == 2
    # without TensorRT/GPU (CI): exit 2, and the command to run on the GPU host (tests/export/test_fp16.py
    # checks the full line)
    assert f"python -m ffexport.tensorrt {(tmp_path / 'model.onnx').resolve()}" in capsys.readouterr().err
    assert read_onnx_meta(tmp_path / "model.onnx").input.height == 64


def test_missing_checkpoint(tmp_path, capsys):
    assert ffexport_main(["--no-bf16", "--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 1
    assert "no such checkpoint" in capsys.readouterr().err


def test_int8_calib_accepts_a_plain_folder_of_normal_images(tiny_checkpoint, elpv_split, tmp_path):
    # Issue 10: `ffexport --int8 --calib DIR` refused a plain folder of normal images unless
    # it was an MVTec root. Re-fit and calibration both read it.
    import shutil

    from ffexport.cli import main
    from ffrt.metafile import read_onnx_meta

    calib = tmp_path / "line_normals"
    calib.mkdir()
    for s in elpv_split.train[:20]:
        shutil.copy(s.path, calib / s.path.name)
    out = tmp_path / "export"
    rc = main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--batch-max", "8", "--int8", "--calib", str(calib),
               "--refit-epochs", "1", "--calib-count", "8", "--force"])
    assert rc == 0
    for name in ("model.int8-trt.onnx", "model.int8-cpu.onnx"):
        meta = read_onnx_meta(out / name)
        # The head was re-fit and re-calibrated on this folder's split (20 images: 2 held
        # out), not on the checkpoint's recorded data (elpv:mono, 44 validation normals).
        assert meta.precision == "int8" and "validation normals (n=2)" in meta.head_fit
