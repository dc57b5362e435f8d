"""The graph that ships: uint8 NHWC bytes in, anomaly map and score out.

Casting, scaling to [0, 1] and the channel transpose happen inside the graph, so the host
sends one byte per pixel and no preprocessing can drift between training and serving.
The cast comes first: TensorRT takes a UINT8 network input only when it feeds a Cast
directly (onnx-tensorrt's operator matrix: UINT8 only as network input or output; its
Transpose has no UINT8 type), which ffrt.tensorrt.compat checks on every export.
Everything after that is the trained model itself, including THE anomaly head that
training-time evaluation used; its decoders in the shipped form of their kind (fftrain.kinds:
FastFlow's fused_flow, CFLOW-AD's cflow_conv: the same functions with the channel permutations
and per-channel affines folded into 1x1 convolutions, so a runtime runs only convolutions and
element-wise operations). A model with a memory bank (fftrain.memory_bank) adds its weighted
patch distance to the score (and, where training chose it, its distance map to the anomaly map),
in FP32 like the head.
"""

from __future__ import annotations

import torch
from torch import nn

from fftrain.model import AnomalyModel

INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score")


class FusedGraph(nn.Module):
    def __init__(self, model: AnomalyModel):
        super().__init__()
        self.model = model.eval()
        self.flows = nn.ModuleList(model.kind.shipped(decoder) for decoder in model.flows)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: uint8 [N, H, W, 3] RGB -> (anomaly_map float32 [N, 1, H, W], score float32 [N])."""
        x = image.to(torch.float32).permute(0, 3, 1, 2) / 255.0
        model = self.model
        features = model.extract(x)
        return model.with_bank(*model.head([flow(f) for flow, f in zip(self.flows, model.normalize(features))]), features)
