"""What happens with models that are not what Detector expects, and with backend names."""

import sys

import onnxruntime
import pytest

from ffrt import BackendUnavailableError, Detector, FFRTError, InvalidArgumentError, ModelFileError
from ffrt.backends import AUTO_ORDER, availability, backend_names


@pytest.fixture
def no_session(monkeypatch):
    """Makes building an ORT session a test failure: errors must come from the metadata."""

    def forbidden(*a, **k):
        raise AssertionError("an InferenceSession was created before the metadata was checked")

    monkeypatch.setattr(onnxruntime, "InferenceSession", forbidden)


def test_non_ffrt_onnx_fails_before_any_session(models, no_session):
    with pytest.raises(ModelFileError, match="not an ffrt model.*ffexport"):
        Detector(models["no_meta"])


def test_newer_schema_says_upgrade(models, no_session):
    with pytest.raises(ModelFileError, match="schema_version 99.*upgrade ffrt"):
        Detector(models["schema99"])


def test_garbage_file(tmp_path, no_session):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"this is not a protobuf \x00\xff" * 50)
    with pytest.raises(ModelFileError, match="not a readable ONNX file"):
        Detector(p)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        Detector(tmp_path / "nope.onnx")
    assert issubclass(ModelFileError, FFRTError) and issubclass(ModelFileError, ValueError)


def test_engine_file_needs_tensorrt(tmp_path, no_session):
    from ffrt.tensorrt.build import missing_for_tensorrt

    p = tmp_path / "model.engine"
    p.write_bytes(b"\x00" * 16)
    if missing_for_tensorrt() is None:  # a GPU host (issue 11 item 9): the plan is refused for its missing sidecar
        with pytest.raises(ModelFileError, match="no metadata sidecar"):
            Detector(p)
        return
    with pytest.raises(BackendUnavailableError, match=r'TensorRT.*not available here.*ffrt\[gpu\]'):
        Detector(p)


def test_other_suffix(tmp_path, no_session):
    p = tmp_path / "model.pt"
    p.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelFileError, match=r"expected an \.onnx model"):
        Detector(p)


@pytest.mark.parametrize(
    "key,fragment",
    [
        ("float_input", "tensor(float), but ffrt models take uint8"),
        ("wrong_size", "height 32 != 64"),
        ("wrong_name", "named 'pixels' but the metadata says 'image'"),
        ("fixed_batch", "fixed batch size of 1"),
    ],
)
def test_graph_must_match_the_metadata(models, key, fragment):
    with pytest.raises(ModelFileError) as exc:
        Detector(models[key])
    assert fragment in str(exc.value) and "ffexport" in str(exc.value)


def test_unknown_backend(red_model):
    with pytest.raises(BackendUnavailableError, match="unknown backend 'fast'.*onnxruntime-cpu"):
        Detector(red_model, backend="fast")


def test_cuda_unavailable_here(red_model):
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match=r"onnxruntime-cuda.*ffrt\[gpu\]"):
        Detector(red_model, backend="onnxruntime-cuda")


@pytest.mark.parametrize("name", ["tensorrt", "onnxruntime-tensorrt"])
def test_gpu_backends_say_what_is_missing(red_model, name):
    if availability()[name] is None:
        pytest.skip(f"{name} is available on this machine (GPU host): nothing is missing")
    with pytest.raises(BackendUnavailableError, match=r"not available here.*ffrt\[gpu\]"):
        Detector(red_model, backend=name)


def test_missing_onnxruntime_says_what_to_install(red_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(BackendUnavailableError, match=r'pip install "ffrt\[cpu\]"'):
        Detector(red_model, backend="onnxruntime-cpu")
    monkeypatch.setitem(sys.modules, "openvino", None)  # "auto" would run the model on OpenVINO otherwise
    with pytest.raises(BackendUnavailableError, match=r'no inference backend.*pip install "ffrt\[cpu\]"'):
        Detector(red_model)


def test_bad_arguments(red_model):
    with pytest.raises(InvalidArgumentError, match="color_order"):
        Detector(red_model, color_order="BRG")
    with pytest.raises(InvalidArgumentError, match="threads"):
        Detector(red_model, threads=0)
    with pytest.raises(InvalidArgumentError, match="finite"):
        Detector(red_model, pixel_threshold=float("nan"))


def test_threads_are_passed_to_the_session(red_model):
    assert "1 threads" in Detector(red_model, threads=1).backend_description
    assert Detector(red_model, threads=2)._backend._session.get_session_options().intra_op_num_threads == 2


def test_registry_lists(red_model):
    assert backend_names()[:5] == ("auto", "tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
    av = availability()
    assert tuple(av) == AUTO_ORDER and av["onnxruntime-cpu"] is None
    assert all(reason is None or (isinstance(reason, str) and reason) for reason in av.values())


def test_auto_tries_the_cpu_first_for_a_cpu_target_file(tmp_path):
    # Issue 10: backend="auto" tried TensorRT first even for an INT8 file encoded for CPUs.
    # On this machine every GPU backend is unavailable, so whatever "auto" tried before the
    # CPU shows up in backend_selection.
    from conftest import make_graph, make_meta, save_model

    meta = make_meta().model_copy(update={"precision": "int8", "target": "cpu"})
    det = Detector(save_model(tmp_path / "model.int8-cpu.onnx", make_graph(), meta))
    assert det.backend_name == "onnxruntime-cpu"
    assert det.backend_selection == ()  # nothing was tried before the CPU


def test_auto_order_for_other_targets(red_model):
    from ffrt.backends import auto_order

    from conftest import make_meta

    assert auto_order(make_meta()) == AUTO_ORDER
    assert auto_order(make_meta().model_copy(update={"target": "tensorrt"})) == AUTO_ORDER
    assert auto_order(make_meta().model_copy(update={"target": "cpu"}))[0] == "onnxruntime-cpu"
    if availability()["tensorrt"] is not None:  # no GPU here: an "any" model records the skip
        assert any(s.startswith("tensorrt:") for s in Detector(red_model).backend_selection)
