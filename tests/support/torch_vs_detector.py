"""One model's outputs from PyTorch and from its exported file through the Detector (ONNX
Runtime, model-size maps), for parity tests on real images."""

from __future__ import annotations

import numpy as np
import torch

from ffrt import Detector
from fftrain.data import to_tensor_batch


def torch_and_detector(model, onnx_path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(PyTorch maps [N, 1, H, W], PyTorch scores [N], Detector maps [N, H, W], Detector scores [N])
    of a uint8 RGB batch at the model's size."""
    model.eval()
    with torch.inference_mode():
        t_map, t_score = (x.numpy() for x in model(to_tensor_batch(images)))
    det = Detector(onnx_path, backend="onnxruntime-cpu", color_order="RGB", resize_outputs=False)
    results = det.predict_batch(list(images), batch_size=8)
    return t_map, t_score, np.stack([r.anomaly_map for r in results]), np.array([r.score for r in results])
