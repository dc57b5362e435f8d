"""Contract-following ONNX models whose outputs are a known function of the input.

The graph: anomaly_map = R channel / 255 (as [N, 1, H, W]), score = max of the map. So a
pure red image scores 1.0, a pure blue one 0.0, and the mask is where the red channel is
bright: every behaviour of the runtime (colour order, resize, mask placement, batching)
can be asserted exactly, through the real onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ffrt.meta import META_KEY, BackboneInfo, FlowInfo, InputSpec, ModelMeta, ScoreSpec, Thresholds
from ffrt.metafile import set_proto_meta

SIZE = 32


@pytest.fixture(scope="module")
def cuda_site():
    """cuda-python's genuine bindings wheels, installed once (tests/support/trtenv)."""
    return _trtenv().cuda_python()


@pytest.fixture(scope="module")
def fake_driver():
    """The folder of the CPU stand-in libcuda.so.1 (tests/support/trtenv)."""
    return _trtenv().fake_driver()


def _trtenv():
    # The same module object the GPU-binding tests import (tests/support on sys.path).
    import sys

    support = str(Path(__file__).resolve().parents[1] / "support")
    if support not in sys.path:
        sys.path.insert(0, support)
    import trtenv

    return trtenv


def make_meta(height=SIZE, width=SIZE, batch_max=None, image=0.5, pixel=0.5, interpolation="area") -> ModelMeta:
    return ModelMeta(
        input=InputSpec(
            height=height, width=width, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
            resize_interpolation=interpolation,
        ),
        score=ScoreSpec(reduction="max"),
        thresholds=Thresholds(image=image, pixel=pixel, source="test"),
        backbone=BackboneInfo(name="red-channel", pretrained=False),
        flow=FlowInfo(steps=1, hidden_ratio=1.0, conv3x3_only=True, clamp=2.0),
        feature_strides=(1,),
        batch_max=batch_max,
        opset=17,
        source_checkpoint_sha256="0" * 64,
        created_at="2025-01-01T00:00:00Z",
    )


def make_graph(height=SIZE, width=SIZE, input_dtype=TensorProto.UINT8, input_name="image", nan=False, batch_dim="N"):
    """The red-channel graph. nan=True makes map and score NaN (0/0), like an fp16 overflow."""
    x = helper.make_tensor_value_info(input_name, input_dtype, [batch_dim, height, width, 3])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [batch_dim, 1, height, width])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch_dim])
    inits = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [3]),
        helper.make_tensor("k255", TensorProto.FLOAT, [], [255.0]),
    ]
    nodes = [
        helper.make_node("Cast", [input_name], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["xf", "starts", "ends", "axes"], ["red"]),  # [N,H,W,1]
        helper.make_node("Transpose", ["red"], ["red_nchw"], perm=[0, 3, 1, 2]),
    ]
    if nan:
        nodes += [
            helper.make_node("Sub", ["red_nchw", "red_nchw"], ["zero"]),
            helper.make_node("Div", ["zero", "zero"], ["anomaly_map"]),
        ]
    else:
        nodes.append(helper.make_node("Div", ["red_nchw", "k255"], ["anomaly_map"]))
    nodes.append(helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0))
    graph = helper.make_graph(nodes, "red_channel", [x], [amap, score], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save_model(path: Path, proto, meta: ModelMeta | None = None, meta_json: str | None = None) -> Path:
    if meta is not None:
        set_proto_meta(proto, meta)
    if meta_json is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, meta_json
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Paths of the test models, built once per session."""
    d = tmp_path_factory.mktemp("models")
    meta99 = make_meta().model_dump(mode="json")
    meta99["schema_version"] = 99
    return {
        "red": save_model(d / "red.onnx", make_graph(), make_meta()),
        "red_b3": save_model(d / "red_b3.onnx", make_graph(), make_meta(batch_max=3)),
        "red_linear": save_model(d / "red_linear.onnx", make_graph(), make_meta(interpolation="linear")),
        "nan": save_model(d / "nan.onnx", make_graph(nan=True), make_meta()),
        "no_meta": save_model(d / "no_meta.onnx", make_graph()),
        "schema99": save_model(d / "schema99.onnx", make_graph(), meta_json=json.dumps(meta99)),
        "float_input": save_model(d / "float_input.onnx", make_graph(input_dtype=TensorProto.FLOAT), make_meta()),
        "wrong_size": save_model(d / "wrong_size.onnx", make_graph(), make_meta(height=64, width=64)),
        "wrong_name": save_model(d / "wrong_name.onnx", make_graph(input_name="pixels"), make_meta()),
        "fixed_batch": save_model(d / "fixed_batch.onnx", make_graph(batch_dim=1), make_meta()),
    }


@pytest.fixture(scope="session")
def red_model(models) -> Path:
    return models["red"]


def solid_bgr(h: int, w: int, bgr: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bgr
    return img
