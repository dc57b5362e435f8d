"""ffrt: the FastFlow anomaly-detection runtime for production-line inspection.

    from ffrt import Detector
    det = Detector("model.onnx")
    result = det(frame_bgr)        # score, is_anomalous, anomaly_map, mask, latency_ms

Needs numpy, opencv, pydantic, onnx and an inference backend (pip install "ffrt[cpu]" or
"ffrt[gpu]"). Never imports torch.
"""

from .detector import Detector, ImageSize
from .drift import Health
from .regions import Region
from .result import LatencySplit, Result
from .errors import (
    BackendUnavailableError,
    FFRTError,
    ImageFileError,
    InferenceError,
    InvalidArgumentError,
    InvalidImageError,
    ModelFileError,
    QueueFullError,
)
from .meta import ModelMeta, Thresholds
from .stats import LatencyStats, PipelineStats

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Detector",
    "FFRTError",
    "Health",
    "ImageFileError",
    "ImageSize",
    "InferenceError",
    "InvalidArgumentError",
    "InvalidImageError",
    "LatencySplit",
    "LatencyStats",
    "ModelFileError",
    "ModelMeta",
    "PipelineStats",
    "QueueFullError",
    "Region",
    "Result",
    "Thresholds",
    "__version__",
]
