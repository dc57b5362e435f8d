"""Whether TensorRT 10 can build a graph, decided on the ONNX (ffrt.tensorrt.compat), and the
shipped graph's uint8 input feeding a Cast directly.

The graphs are real: the tiny FastFlow trained on ELPV cells (tests/conftest.py) exported by the
real exporter, the same model exported with the input stage as it was before the fix
(Transpose on uint8, then Cast), and small hand-built graphs for each rule of the check.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from ffcore.trtlimits import TOPK_MAX_K
from ffrt.tensorrt import compat
from support.uint8_input import assert_uint8_only_into_cast, uint8_input_readers


def _old_forward(self, image):
    """The input stage as every export had it before: permute the uint8 bytes, then cast."""
    x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    model = self.model
    features = model.extract(x)
    return model.with_bank(*model.head([flow(f) for flow, f in zip(self.flows, model.normalize(features))]), features)


@pytest.fixture(scope="module")
def old_graph(tiny_checkpoint, tmp_path_factory):
    from ffexport import graph
    from ffexport.exporter import export_onnx
    from fftrain import checkpoint

    model, payload = checkpoint.load(tiny_checkpoint)
    fixed = graph.FusedGraph.forward
    graph.FusedGraph.forward = _old_forward
    try:
        path, _ = export_onnx(model, payload, checkpoint.sha256(tiny_checkpoint),
                              tmp_path_factory.mktemp("old_graph") / "model.onnx", batch_max=2)
    finally:
        graph.FusedGraph.forward = fixed
    return path


def test_the_old_input_stage_is_found_naming_the_transpose(old_graph):
    assert uint8_input_readers(old_graph) == {"image": {"Transpose"}}  # the graph really is the old one
    found = compat.check(old_graph)
    first = found[0]
    assert first.node == "image" and "feeds Transpose" in first.problem and "only into a Cast" in first.problem
    # The rest is the same defect seen from its nodes: a Transpose on UINT8, a uint8 tensor inside.
    assert {f.op for f in found} == {"input", "Transpose", "Cast"}, found
    transpose = [f for f in found if f.op == "Transpose"]
    assert any("UINT8" in f.problem for f in transpose), transpose


def test_the_shipped_graph_casts_first_and_passes(tiny_onnx):
    assert_uint8_only_into_cast(tiny_onnx)
    assert compat.check(tiny_onnx) == []


def test_the_fp16_graph_casts_first_and_passes(tiny_checkpoint, tmp_path):
    from ffexport.precision import export_fp16
    from fftrain import checkpoint

    model, payload = checkpoint.load(tiny_checkpoint)
    path, _ = export_fp16(model, payload, checkpoint.sha256(tiny_checkpoint), tmp_path / "model.fp16.onnx", batch_max=2)
    assert_uint8_only_into_cast(path)
    assert compat.check(path) == []


def test_ffexport_refuses_the_old_graph_with_one_line_and_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch,
                                                                        capsys):
    from ffexport import graph
    from ffexport.cli import main

    monkeypatch.setattr(graph.FusedGraph, "forward", _old_forward)
    out = tmp_path / "out"
    assert main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(out), "--batch-max", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "TensorRT cannot build this graph" in err[0] and "Transpose" in err[0] and "nothing was written" in err[0]
    assert not (out / "model.onnx").exists()


def test_ffexport_prints_the_check_for_every_file(tiny_checkpoint, tmp_path, capsys):
    from ffexport.cli import main

    assert main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(tmp_path), "--batch-max", "2"]) == 0
    out = capsys.readouterr().out
    assert "TensorRT 10 check" in out and "model.onnx OK" in out


def test_engine_build_refuses_before_any_tensorrt_call(old_graph):
    """On this CPU machine TensorRT is not installed: the graph is refused first, naming the node."""
    from ffrt.tensorrt.build import EngineBuildError, build_plan
    from ffrt.tensorrt.plan import BatchProfile
    from ffrt.metafile import read_onnx_meta

    meta = read_onnx_meta(old_graph)
    with pytest.raises(EngineBuildError, match="Transpose"):
        build_plan(old_graph, meta, BatchProfile(min=1, opt=1, max=2), 256, None)


def test_doctor_checks_a_model_file(tiny_onnx, old_graph, tmp_path, capsys):
    from ffrt.cli import main

    assert main(["doctor", str(tiny_onnx)]) == 0
    assert f"TensorRT 10 check of {tiny_onnx}: OK" in capsys.readouterr().out
    assert main(["doctor", str(old_graph)]) == 1
    out = capsys.readouterr().out
    assert "TensorRT cannot build it (" in out and "feeds Transpose" in out
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf" * 10)
    assert main(["doctor", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable ONNX model" in err[0]


# --- each rule on a hand-built graph -------------------------------------------------------------


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _by_node(found) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in found:
        out[f.node] = (out.get(f.node, "") + "; " + f.problem).strip("; ")
    return out


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _topk(k: int, sorted_: int = 1):
    k_init = numpy_helper.from_array(np.array([k], np.int64), "k")
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", sorted=sorted_)
    return _model([node], [_f32("x", ["batch", 5000])], [_f32("v", ["batch", k]),
                  helper.make_tensor_value_info("i", TensorProto.INT64, ["batch", k])], [k_init])


def test_topk_k_limit_is_the_stricter_reading():
    # onnx-tensorrt's matrix: "K input must be less than 3840"; the bindings' docstrings: "up to 3840".
    assert TOPK_MAX_K == 3839
    assert compat.check(_topk(3839)) == []
    (f,) = compat.check(_topk(3840))
    assert (f.op, f.node) == ("TopK", "topk") and "K = 3840" in f.problem
    (f,) = compat.check(_topk(10, sorted_=0))
    assert "sorted" in f.problem


def test_plugin_and_unsupported_operators_are_named():
    plugin = helper.make_node("FusedConv", ["x"], ["y"], name="ms_conv", domain="com.microsoft")
    unsupported = helper.make_node("Bernoulli", ["y2"], ["z"], name="coin")
    relu = helper.make_node("Relu", ["x"], ["y2"], name="relu")
    m = _model([plugin, relu, unsupported], [_f32("x", [1, 4])], [_f32("y", [1, 4]), _f32("z", [1, 4])])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    found = {(f.node, f.op): f.problem for f in compat.check(m)}
    assert set(found) == {("ms_conv", "FusedConv"), ("coin", "Bernoulli")}
    assert "plugin" in found[("ms_conv", "FusedConv")]


def test_types_uint8_inside_and_dynamic_image_dims():
    u8 = helper.make_tensor_value_info("img", TensorProto.UINT8, ["batch", "h", 8, 3])
    cast_u8 = helper.make_node("Cast", ["img"], ["img2"], name="still_u8", to=TensorProto.UINT8)
    cast_f = helper.make_node("Cast", ["img2"], ["x"], name="to_float", to=TensorProto.FLOAT)
    double_relu = helper.make_node("Not", ["x_bool"], ["nb"], name="not")  # BOOL input: allowed
    m = _model([cast_u8, cast_f, double_relu],
               [u8, helper.make_tensor_value_info("x_bool", TensorProto.BOOL, [1])],
               [_f32("x", ["batch", "h", 8, 3]), helper.make_tensor_value_info("nb", TensorProto.BOOL, [1])])
    found = compat.check(m)
    problems = _by_node(found)
    assert set(problems) == {"img", "still_u8", "to_float"}, found
    assert "[1]" in problems["img"]  # axis 1 (the height) is dynamic; axis 0 may be
    assert "uint8 tensor 'img2' inside the graph" in problems["still_u8"]
    assert "uint8 tensor 'img2' inside the graph" in problems["to_float"]


def test_wrong_input_type_for_an_operator():
    conv_w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.int32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="int_conv")
    m = _model([conv], [helper.make_tensor_value_info("x", TensorProto.INT32, [1, 1, 4, 4])],
               [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1, 4, 4])], [conv_w])
    (f,) = compat.check(m)
    assert f.node == "int_conv" and "INT32" in f.problem and "FP32" in f.problem


def test_quantization_zero_point_and_resize_mode_and_runtime_axes():
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, np.uint8), "zp")
    q = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q_asym")
    dq = helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dq_asym")
    sizes = numpy_helper.from_array(np.array([1, 1, 8, 8], np.int64), "sizes")
    resize = helper.make_node("Resize", ["dq", "", "", "sizes"], ["r"], name="cubic", mode="cubic")
    axes_shape = helper.make_node("Shape", ["r"], ["axes_dyn"], name="shape", start=2, end=3)
    reduce = helper.make_node("ReduceSum", ["r", "axes_dyn"], ["y"], name="sum_dyn")
    m = _model([q, dq, resize, axes_shape, reduce], [_f32("x", [1, 1, 4, 4])], [_f32("y", None)], [scale, zp, sizes])
    problems = _by_node(compat.check(m))
    assert "zero point" in problems["q_asym"] and "zero point" in problems["dq_asym"]
    assert "cubic" in problems["cubic"]
    assert "axes" in problems["sum_dyn"]
    assert "shape" not in problems
