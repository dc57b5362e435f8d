from __future__ import annotations

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="session")
def frame_folder(tmp_path_factory, elpv_split):
    """Four real ELPV cells at their original 300x300 size, as files."""
    from fftrain.data import read_rgb

    out = tmp_path_factory.mktemp("frames")
    for i, s in enumerate(elpv_split.val[:4]):
        cv2.imwrite(str(out / f"{i}.png"), cv2.cvtColor(read_rgb(s.path), cv2.COLOR_RGB2BGR))
    return out


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory, elpv_split):
    """MVTec-style folder: real ELPV normal cells (64x64), SYNTHETIC defects with masks."""
    from ffeval.synthetic_data import build_synthetic_folder

    normals = [s.path for s in elpv_split.test if s.label == 0]
    return build_synthetic_folder(normals, tmp_path_factory.mktemp("synthetic") / "cells", size=64, n_train=4,
                                  n_test_normal=8, n_defect_per_kind=3, seed=3)


@pytest.fixture
def read_png():
    def read(path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert img is not None, f"{path} is not a readable PNG"
        return img

    return read
