"""Shared fixtures: a tiny FastFlow trained on REAL ELPV solar-cell images, and its export.

Tiny (64x64 input, 2 flow steps, 2 epochs) so the suite stays fast on 2 CPU cores, but
made by the real trainer and exporter with the real EfficientNet-Lite0 weights: the tests
exercise what ships, not stand-ins. ELPV images come from the `demo` extra
(elpv-dataset, CC BY-NC-SA 4.0), which `make test` installs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY_SIZE = 64


def _gpu_reason() -> str | None:
    """None when an NVIDIA GPU with TensorRT is usable here, else why not."""
    import shutil

    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this machine (nvidia-smi not found)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return 'TensorRT is not installed (pip install "ffrt[gpu]")'
    return None


def pytest_collection_modifyitems(config, items):
    reason = _gpu_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def elpv_split():
    from fftrain.data import elpv

    split = elpv("mono")
    # A small, deterministic subset keeps the suite fast.
    split.train = split.train[:48]
    split.val = split.val[:12]
    return split


@pytest.fixture(scope="session")
def real_images(elpv_split):
    """uint8 [8, 64, 64, 3] RGB ELPV cells, resized the way the runtime resizes."""
    from fftrain.data import load_batch

    return load_batch(elpv_split.val[:8], TINY_SIZE)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, elpv_split) -> Path:
    from fftrain.config import ModelConfig
    from fftrain.train import TrainSettings, train_and_save

    out = tmp_path_factory.mktemp("tiny") / "model.pt"
    # With a memory bank (fftrain.memory_bank) whatever the trainer's choice, so that every export
    # and runtime test runs its part of the graph.
    config = ModelConfig(image_size=TINY_SIZE, flow_steps=2, hidden_ratio=1.0, memory_bank="on")
    train_and_save(config, elpv_split, TrainSettings(epochs=2, batch_size=16, progress=False), out, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    from ffexport.cli import main

    out = tmp_path_factory.mktemp("tiny_export")
    assert main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(out), "--batch-max", "8"]) == 0
    return out / "model.onnx"


@pytest.fixture(scope="session", autouse=True)
def reuse_traces_of_identical_weights():
    """Trace each distinct model to ONNX once per session.

    Many export tests run ffexport on the same tiny checkpoint (failure paths, publishing,
    kills), and torch.onnx's dynamo trace is most of each export's time (~7 s here, 20+ times
    a session). Identical weights, configuration, batch range and opset give the same graph, so
    a repeat gets a fresh copy of the first trace's bytes; the first trace of every weight set
    is real, and every check after the trace (parity, gates, metadata, renames) still runs.
    A reuse across different weights would fail the export's own parity check against the
    PyTorch model; a reuse across different code computing the same values would not, so the
    traced code is part of the key (tests/export/test_tensorrt_compat.py exports the same
    weights with an older FusedGraph.forward). Exports in a subprocess trace for themselves.
    """
    import hashlib
    import marshal

    import onnx
    import torch

    import ffexport.exporter as exporter
    import ffexport.int8_head as int8_head

    real_trace = exporter.trace_to_onnx
    traced: dict[str, bytes] = {}

    def trace_once(model, batch_max, opset):
        key = hashlib.sha256(f"{type(model).__qualname__}|{model.config!r}|{batch_max}|{opset}".encode())
        key.update(marshal.dumps(exporter.FusedGraph.forward.__code__))
        for name, tensor in model.state_dict().items():
            key.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            key.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        digest = key.hexdigest()
        if digest not in traced:
            traced[digest] = real_trace(model, batch_max, opset).SerializeToString()
        return onnx.load_from_string(traced[digest])

    patch = pytest.MonkeyPatch()
    patch.setattr(exporter, "trace_to_onnx", trace_once)
    patch.setattr(int8_head, "trace_to_onnx", trace_once)
    yield
    patch.undo()
