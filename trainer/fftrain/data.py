"""Datasets for training: the layouts and image reading live in the torch-free core
(:mod:`ffcore.data`, :mod:`ffcore.images`) and are re-exported here for the trainer's
callers; only the torch conversion is the trainer's own."""

from __future__ import annotations

import numpy as np

from ffcore.data import (  # noqa: F401  (re-exported)
    ELPV_DEFECT_MIN_PROBABILITY,
    DataSplit,
    Sample,
    auto_image_size,
    downscale_note,
    elpv,
    load_batch,
    mvtec_folder,
    plain_folder,
    resolve,
    split_train_val,
)
from ffcore.files import IMAGE_SUFFIXES  # noqa: F401
from ffcore.images import DataError, image_shape, read_mask, read_rgb, resize_to_model  # noqa: F401


def to_tensor_batch(images: np.ndarray):
    """uint8 NHWC -> float NCHW in [0, 1], the same arithmetic as the graph's input stage."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def is_grey(image: np.ndarray) -> bool:
    """True when a uint8 HxWx3 image has three equal channels."""
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def is_monochrome(images: np.ndarray) -> bool:
    """True when every image of a uint8 [N, H, W, 3] batch is grey (and there is at least one)."""
    return bool(len(images)) and all(is_grey(img) for img in images)
