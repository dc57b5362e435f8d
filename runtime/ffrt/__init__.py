"""ffrt: the FastFlow anomaly-detection runtime for production-line inspection.

    from ffrt import Detector
    det = Detector("model.onnx")
    result = det(frame_bgr)        # score, is_anomalous, anomaly_map, mask, latency_ms

Needs numpy, opencv, pydantic, onnx and an inference backend (pip install "ffrt[cpu]" or
"ffrt[gpu]"). Never imports torch.
"""

from .detector import Detector, ImageSize
from .result import Result
from .errors import (
    BackendUnavailableError,
    FFRTError,
    ImageFileError,
    InferenceError,
    InvalidArgumentError,
    InvalidImageError,
    ModelFileError,
)
from .meta import ModelMeta, Thresholds
from .stats import LatencyStats

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Detector",
    "FFRTError",
    "ImageFileError",
    "ImageSize",
    "InferenceError",
    "InvalidArgumentError",
    "InvalidImageError",
    "LatencyStats",
    "ModelFileError",
    "ModelMeta",
    "Result",
    "Thresholds",
    "__version__",
]
