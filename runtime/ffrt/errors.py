"""Exceptions ffrt raises. Each message says what was wrong and what to do about it.

All derive from ``FFRTError`` so line software can catch one type; the subclasses also
derive from the matching built-in (ValueError, FileNotFoundError, RuntimeError) so
generic handlers keep working.
"""


class FFRTError(Exception):
    """Base class of every error ffrt raises on purpose."""


class InvalidImageError(FFRTError, ValueError):
    """An input image is unusable (None, empty, wrong dtype/shape, NaN, corrupt file)."""


class ImageFileError(InvalidImageError, FileNotFoundError):
    """An image path does not exist or cannot be decoded."""


class ModelFileError(FFRTError, ValueError):
    """A model file is missing, not ONNX, not an ffrt model, or from an unsupported version."""


class BackendUnavailableError(FFRTError, RuntimeError):
    """The requested inference backend cannot run on this machine (missing package, no GPU)."""


class InvalidArgumentError(FFRTError, ValueError):
    """A parameter of an ffrt call is out of range (colour order, batch size, threads, threshold)."""


class InferenceError(FFRTError, RuntimeError):
    """The backend failed while running a valid batch (out of memory, driver error, broken graph)."""


class EngineMismatchError(ModelFileError):
    """A TensorRT plan was built for another TensorRT version, GPU, ONNX or precision."""


class QueueFullError(FFRTError, RuntimeError):
    """``Detector.submit`` with ``queue_policy="reject"``: the queue of waiting images is full."""
