"""The Triton model repository of ``ffrt triton-repo`` and ``ffexport --triton``.

Every config.pbtxt is parsed with Triton's own ModelConfig protobuf (tritonclient's
model_config_pb2, strict text format: an unknown or misspelt field fails), and the layout is
checked against the rules of Triton's model repository guide: a folder per model named as
the model (and as the config's ``name``), a config.pbtxt beside numeric version folders,
the backend's default model file in each (``model.onnx`` for onnxruntime_onnx, ``model.py``
for the python backend). The expected tensors are read from the ONNX graph here, not from
the code under test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason='needs the "client" extra (tritonclient)')
from google.protobuf import text_format  # noqa: E402

from ffrt.cli import main as ffrt_main  # noqa: E402
from ffrt.metafile import read_onnx_meta  # noqa: E402

DEFAULT_FILES = {"onnxruntime_onnx": "model.onnx", "python": "model.py"}
ONNX_TYPES = {onnx.TensorProto.UINT8: pb2.TYPE_UINT8, onnx.TensorProto.FLOAT: pb2.TYPE_FP32}


def parse(path: Path):
    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def check_layout(repo: Path) -> dict:
    """Triton's repository rules; returns {model name: parsed config}."""
    configs = {}
    for entry in sorted(repo.iterdir()):
        assert entry.is_dir(), f"{entry}: only model folders belong at the repository's top level"
        config = parse(entry / "config.pbtxt")
        assert config.name == entry.name, "a config's name must match its folder"
        versions = [p for p in entry.iterdir() if p.is_dir()]
        assert versions and all(p.name.isdigit() for p in versions), versions
        default = DEFAULT_FILES[config.platform or config.backend]
        for v in versions:
            assert (v / default).is_file(), f"{v} lacks {default}"
        configs[entry.name] = config
    return configs


@pytest.fixture(scope="module")
def repo(tiny_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "models"
    assert ffrt_main(["triton-repo", str(tiny_onnx), str(out), "--kind", "cpu", "--max-delay-ms", "3"]) == 0
    return out


def test_layout_follows_tritons_repository_rules(repo, tiny_onnx):
    configs = check_layout(repo)
    assert set(configs) == {"ffrt_model", "ffrt_detector"}
    assert (repo / "ffrt_model" / "1" / "model.onnx").read_bytes() == Path(tiny_onnx).read_bytes()
    assert sorted(p.name for p in (repo / "ffrt_detector" / "1").iterdir()) == ["ffrt_meta.onnx", "model.py"]


def test_ffrt_model_config_is_the_graph(repo, tiny_onnx):
    config = parse(repo / "ffrt_model" / "config.pbtxt")
    meta = read_onnx_meta(tiny_onnx)
    graph = onnx.load(str(tiny_onnx), load_external_data=False).graph
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == meta.batch_max == 8
    want = {}
    for v in list(graph.input) + list(graph.output):
        t = v.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        want[v.name] = (ONNX_TYPES[t.elem_type], dims[1:] or [1], bool(not dims[1:]))
    got = {t.name: (t.data_type, list(t.dims), t.HasField("reshape")) for t in [*config.input, *config.output]}
    assert got == want  # names, types and shapes as the graph; the per-image score reshaped to []
    assert [list(t.reshape.shape) for t in config.output if t.HasField("reshape")] == [[]]
    db = config.dynamic_batching
    assert db.max_queue_delay_microseconds == 3000
    assert list(db.preferred_batch_size) == [4, 8]
    assert [(g.kind, g.count) for g in config.instance_group] == [(pb2.ModelInstanceGroup.KIND_CPU, 1)]


def test_ffrt_detector_config_and_files(repo, tiny_onnx):
    config = parse(repo / "ffrt_detector" / "config.pbtxt")
    meta = read_onnx_meta(tiny_onnx)
    assert config.backend == "python" and config.max_batch_size == 8
    inputs = {t.name: (t.data_type, list(t.dims), t.optional) for t in config.input}
    assert inputs == {"image_bytes": (pb2.TYPE_STRING, [1], True), "image": (pb2.TYPE_UINT8, [-1, -1, -1], True)}
    outputs = {t.name: (t.data_type, list(t.dims)) for t in config.output}
    assert outputs == {
        "score": (pb2.TYPE_FP64, [1]), "is_anomalous": (pb2.TYPE_BOOL, [1]), "normalized_score": (pb2.TYPE_FP64, [1]),
        "anomaly_map": (pb2.TYPE_FP32, [-1, -1]), "mask": (pb2.TYPE_BOOL, [-1, -1]), "regions": (pb2.TYPE_FP64, [-1, 8]),
        "backend": (pb2.TYPE_STRING, [1]), "precision": (pb2.TYPE_STRING, [1]), "latency_split": (pb2.TYPE_FP64, [4]),
    }
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert float(params["image_threshold"]) == meta.thresholds.image
    assert float(params["pixel_threshold"]) == meta.thresholds.pixel
    assert params["graph_model"] == "ffrt_model" and params["graph_max_batch"] == "8"
    # What every Result names as its backend and precision: Triton's ONNX Runtime, on the CPU
    # here (--kind cpu), running the file as encoded.
    assert params["graph_backend"] == "Triton ffrt_model: onnxruntime_onnx, KIND_CPU"
    assert params["graph_precision"] == meta.precision == "fp32"
    assert params["min_region_px"] == "0"
    assert [g.kind for g in config.instance_group] == [pb2.ModelInstanceGroup.KIND_CPU]
    assert read_onnx_meta(repo / "ffrt_detector" / "1" / "ffrt_meta.onnx") == meta
    code = (repo / "ffrt_detector" / "1" / "model.py").read_text()
    assert "from ffrt.triton.python_model import TritonPythonModel" in code and "sys.path" not in code


def test_a_backend_description_with_quotes_survives_the_config(tiny_onnx, tmp_path):
    """ffrt serve writes its Detector's backend description into the config: any text must
    parse back unchanged (protobuf text format, strict)."""
    from ffrt.triton.repository import Options, detector_files

    meta = read_onnx_meta(tiny_onnx)
    text = 'ffrt serve ffrt_model: openvino (CPU, "bf16", C:\\models\\a.onnx)\nsecond line'
    files = detector_files(tmp_path, meta, Options(kind="cpu").checked(meta), graph=(text, "int8+bf16"))
    config = text_format.Parse(files[tmp_path / "ffrt_detector" / "config.pbtxt"].decode(), pb2.ModelConfig())
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["graph_backend"] == text.replace("\n", " ") and params["graph_precision"] == "int8+bf16"


def _renamed(model: Path, out: Path, names: dict[str, str]) -> Path:
    """``model`` with its graph tensors renamed (old -> new) in the graph and in its metadata."""
    from ffrt.metafile import set_proto_meta

    proto = onnx.load(str(model))
    g = proto.graph
    for value in (*g.input, *g.output):
        value.name = names.get(value.name, value.name)
    for node in g.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    meta = read_onnx_meta(model)
    meta = meta.model_copy(update={
        "input": meta.input.model_copy(update={"name": names[meta.input.name]}),
        "outputs": meta.outputs.model_copy(update={k: names[v] for k, v in meta.outputs.model_dump().items()}),
    })
    set_proto_meta(proto, meta)
    onnx.save(proto, str(out))
    return out


def test_hostile_tensor_names_cannot_inject_configuration(tiny_onnx, tmp_path):
    """Tensor names are the ONNX file's: quotes, backslashes and line breaks in them must come
    back from Triton's parser as the very names, and add no input, output or parameter."""
    meta = read_onnx_meta(tiny_onnx)
    hostile = {
        meta.input.name: 'image" dims: [ 1 ] }, { name: "evil',
        meta.outputs.anomaly_map: 'map\\" } ]\nparameters { key: "k" value: { string_value: "v" } }\n#',
        meta.outputs.score: "score\r\n\t'\x01 \u00e9",
    }
    model = _renamed(tiny_onnx, tmp_path / "hostile.onnx", hostile)
    out = tmp_path / "models"
    assert ffrt_main(["triton-repo", str(model), str(out), "--kind", "cpu"]) == 0
    config = check_layout(out)["ffrt_model"]
    assert [t.name for t in config.input] == [hostile[meta.input.name]]
    assert [t.name for t in config.output] == [hostile[meta.outputs.anomaly_map], hostile[meta.outputs.score]]
    assert [list(t.dims) for t in config.input] == [[meta.input.height, meta.input.width, 3]]
    assert len(config.parameters) == 0
    # The names are the graph's own: Triton's ONNX Runtime backend finds them there.
    graph = onnx.load(str(out / "ffrt_model" / "1" / "model.onnx")).graph
    assert [v.name for v in graph.input] == [t.name for t in config.input]
    assert [v.name for v in graph.output] == [t.name for t in config.output]


def test_gpu_kind_instances_and_batch_options(tiny_onnx, tmp_path):
    out = tmp_path / "gpu"
    assert ffrt_main(["triton-repo", str(tiny_onnx), str(out), "--instances", "2", "--max-batch", "1"]) == 0
    configs = check_layout(out)
    model = configs["ffrt_model"]
    assert [(g.kind, g.count) for g in model.instance_group] == [(pb2.ModelInstanceGroup.KIND_GPU, 2)]
    assert model.max_batch_size == 1 and list(model.dynamic_batching.preferred_batch_size) == []
    assert [g.kind for g in configs["ffrt_detector"].instance_group] == [pb2.ModelInstanceGroup.KIND_CPU]


def test_refusals_write_nothing(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "models"
    assert ffrt_main(["triton-repo", str(tiny_onnx), str(out), "--max-batch", "9"]) == 1
    assert "max batch must be 1..8" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    other = tmp_path / "plain.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), other)
    assert ffrt_main(["triton-repo", str(other), str(out)]) == 1
    err = capsys.readouterr().err
    assert "not an ffrt model" in err and len(err.strip().splitlines()) == 1


def test_rewrite_replaces_every_file(repo, tiny_onnx, tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(repo, copy)
    (copy / "ffrt_detector" / "config.pbtxt").write_text("garbage")
    assert ffrt_main(["triton-repo", str(tiny_onnx), str(copy), "--kind", "cpu", "--max-delay-ms", "3"]) == 0
    for f in ("ffrt_model/config.pbtxt", "ffrt_detector/config.pbtxt", "ffrt_detector/1/model.py"):
        assert (copy / f).read_bytes() == (repo / f).read_bytes()


def test_ffexport_writes_the_repository(tiny_checkpoint, tmp_path):
    from ffexport.cli import main as ffexport_main

    out = tmp_path / "export"
    assert ffexport_main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(out), "--batch-max", "4", "--triton"]) == 0
    configs = check_layout(out / "triton")
    assert configs["ffrt_model"].max_batch_size == 4
    assert [g.kind for g in configs["ffrt_model"].instance_group] == [pb2.ModelInstanceGroup.KIND_GPU]
    assert (out / "triton" / "ffrt_model" / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert np.isclose(float(configs["ffrt_detector"].parameters["image_threshold"].string_value),
                      read_onnx_meta(out / "model.onnx").thresholds.image)
