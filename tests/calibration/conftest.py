"""Fixtures for ffcalib tests: the session's tiny real FastFlow (tests/conftest.py) quantized once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

TINY = 64


@pytest.fixture(scope="session")
def val_set(elpv_split):
    """Real ELPV test cells at the tiny model's size: 24 normal + 24 defective, labels 0/1."""
    from fftrain.data import load_batch

    normals = [s for s in elpv_split.test if s.label == 0][:24]
    defects = [s for s in elpv_split.test if s.label == 1][:24]
    samples = normals + defects
    return load_batch(samples, TINY), np.array([s.label for s in samples])


@pytest.fixture(scope="session")
def calib_images(elpv_split):
    from fftrain.data import load_batch

    return load_batch(elpv_split.train[:32], TINY)


@pytest.fixture(scope="session")
def int8_pair(tiny_onnx, calib_images, val_set, tmp_path_factory):
    """quantize_model on the tiny model (forced, so the report exists whatever the gate says)."""
    from ffcalib.int8 import quantize_model

    out = tmp_path_factory.mktemp("int8")
    images, labels = val_set
    report = quantize_model(
        tiny_onnx, out, calib_images, count=32, val_images=images, val_labels=labels, force=True,
        benchmark_batches=(1,), progress=False,
    )
    return out, report


@pytest.fixture
def model_copy(tiny_onnx, tmp_path) -> Path:
    dst = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx, dst)
    return dst
