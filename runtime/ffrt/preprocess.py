"""User input -> the uint8 NHWC RGB batch the fused graph takes.

Everything a line might hand the detector is accepted here and nowhere else:

- numpy uint8 arrays: HxW (gray), HxWx1 (gray), HxWx3 (BGR by default, as OpenCV and most
  camera SDKs deliver; ``color_order="RGB"`` for PIL/imageio/matplotlib data);
- float32/float64 arrays with values in [0, 1] (scaled by 255 and rounded);
- ``str`` / ``os.PathLike`` paths to image files. Files are decoded by OpenCV and are
  therefore always BGR, whatever ``color_order`` says;
- :class:`ReducedFrame`: a frame OpenCV decoded at a fraction of its size (BGR), with the
  size of the whole frame, which the results are given in (``ffrt run``'s JPEG frames).

Anything else is refused with :class:`~ffrt.errors.InvalidImageError` (or
:class:`~ffrt.errors.ImageFileError` for paths) whose message names the problem and says
how to fix it. Validation happens before any pixel is written into the batch, and the
functions here keep no state, so a refused image cannot affect the next call.

Size limits (:class:`ImageLimits`): an image above ``max_pixels`` is refused (for files,
from the size in the header, before anything is decoded: see ``ffcore.imageheader``), and so is
one whose shorter side is below ``min_side`` (it would be upscaled so far that its score
means nothing). Only regular files are opened: a FIFO or device path would block forever
or stream without end.

Normalization (mean/std) is *not* done here: it is inside the graph, so the host sends
one byte per pixel and serving cannot drift from training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffcore.geometry import FrameGeometry
from ffcore.imageheader import image_size
from ffcore.images import DataError, FileTooLarge, Undecodable, decode_image, read_image_bytes

from .errors import ImageFileError, InvalidArgumentError, InvalidImageError
from .meta import InputSpec

COLOR_ORDERS = ("BGR", "RGB")

#: Default pixel limit: 100 megapixels, above the largest area-scan industrial sensors in
#: common use; a frame at the limit costs 300 MB as BGR plus 500 MB for a full-size
#: float32 map and bool mask.
DEFAULT_MAX_PIXELS = 100_000_000
#: Default minimum for the shorter image side.
DEFAULT_MIN_SIDE = 8
# Bytes a decodable image within the pixel limit can take on disk, beyond which a file is
# refused unread: 16 bytes per pixel (4 channels of float32, uncompressed) plus room for
# metadata (EXIF, ICC profiles, other TIFF pages).
_BYTES_PER_PIXEL_MAX = 16
_FILE_SLACK_BYTES = 64 << 20


@dataclass(frozen=True)
class ImageLimits:
    """Which image sizes a Detector accepts.

    max_pixels: height x width above which an image is refused (None: no limit). Files are
                checked from their header before decoding.
    min_side:   the shorter side must be at least this many pixels.
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE

    def __post_init__(self) -> None:
        mp = self.max_pixels
        if mp is not None and (isinstance(mp, bool) or not isinstance(mp, (int, np.integer)) or mp < 1):
            raise InvalidArgumentError(f"max_pixels must be a positive integer or None (no limit), not {mp!r}.")
        ms = self.min_side
        if isinstance(ms, bool) or not isinstance(ms, (int, np.integer)) or ms < 1:
            raise InvalidArgumentError(f"min_side must be a positive integer, not {ms!r}.")

    def problem(self, height: int, width: int, spec: InputSpec | None = None) -> str | None:
        """Why an image of this size is refused, or None if it is accepted."""
        pixels = height * width
        if self.max_pixels is not None and pixels > self.max_pixels:
            return (
                f"the image is {width}x{height} pixels ({pixels / 1e6:.1f} MP), above this Detector's limit "
                f"max_pixels={self.max_pixels} ({self.max_pixels / 1e6:g} MP); decoding and scoring it would need "
                f"about {pixels * 8 / 1e9:.1f} GB. If such images are expected, raise the limit: "
                "Detector(..., max_pixels=N), or crop / downscale the image first."
            )
        if min(height, width) < self.min_side:
            target = f" to the model's {spec.width}x{spec.height} input" if spec is not None else ""
            return (
                f"the image is {width}x{height} pixels; its shorter side is below this Detector's minimum "
                f"min_side={self.min_side} px, so it would be stretched{target} far enough for its score to mean "
                "nothing. Check the camera grab or crop that produced it (Detector(..., min_side=N) changes the minimum)."
            )
        return None


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class PreparedBatch:
    """What the backend is fed, plus each frame's geometry for mapping the outputs back."""

    batch: np.ndarray  # uint8 [N, H, W, 3], RGB, C-contiguous, at the model size
    geometries: tuple[FrameGeometry, ...]  # of each image in ``batch``, computed once here
    #: Position in the caller's list of each image in ``batch`` (all of them unless
    #: errors="return" dropped some).
    positions: tuple[int, ...] = ()
    #: errors="return": (position, error) of each refused image.
    errors: tuple[tuple[int, InvalidImageError], ...] = ()

    @property
    def original_sizes(self) -> tuple[tuple[int, int], ...]:
        """(height, width) of each input image."""
        return tuple(g.frame_size for g in self.geometries)


def check_color_order(color_order: str) -> str:
    """Return the canonical spelling ("BGR"/"RGB") or raise InvalidArgumentError."""
    order = str(color_order).upper()
    if order not in COLOR_ORDERS:
        raise InvalidArgumentError(
            f"color_order must be 'BGR' (OpenCV, most camera SDKs) or 'RGB' (PIL, imageio), "
            f"not {color_order!r}."
        )
    return order


def read_image_file(path: str | os.PathLike, limits: ImageLimits = DEFAULT_LIMITS, spec: InputSpec | None = None) -> np.ndarray:
    """Decode an image file to a BGR uint8 HxWx3 array.

    The file is read by ``ffcore.images`` (regular files only, whole into memory, then
    ``cv2.imdecode``: ``cv2.imread`` cannot open non-ASCII paths on Windows and fails
    silently everywhere), with the size in the header checked against ``limits`` before
    decoding. Gray files come back as three equal channels (IMREAD_COLOR), like in the trainer.
    """
    path = Path(path)
    return decode_image_bytes(read_image_data(path, limits), limits, spec, where=str(path))


def read_image_data(path: str | os.PathLike, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of an image file (a regular, non-empty file no larger than any image within
    ``limits`` can be), not decoded: for sending a file's encoded image elsewhere."""
    path = Path(path)
    try:
        return read_image_bytes(path, _most_bytes(limits))
    except FileTooLarge as e:
        raise ImageFileError(
            f"{path}: the file is {e.size / 1e9:.2f} GB, more than any image within this Detector's "
            f"limit max_pixels={limits.max_pixels} can take; it was not read. Raise the limit "
            "(Detector(..., max_pixels=N)) if such images are expected."
        ) from None
    except DataError as e:
        raise ImageFileError(str(e)) from None


def _most_bytes(limits: ImageLimits) -> int | None:
    return None if limits.max_pixels is None else limits.max_pixels * _BYTES_PER_PIXEL_MAX + _FILE_SLACK_BYTES


#: cv2.imread flags that decode a JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's scaled inverse
#: DCT: the smaller picture costs a fraction of a full decode, and no resize from full size).
REDUCED_DECODE_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
#: The same as one channel, the luminance: for a JPEG, its own Y plane, with no colour
#: conversion (what a luma model reads, ``InputSpec.color == "luma"``).
GRAY_DECODE_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                     8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


@dataclass(frozen=True)
class ReducedFrame:
    """A frame decoded at a reduced resolution (``image``, BGR or gray), with the size of the
    whole frame. ``prepare_batch`` resizes ``image`` into the model input and gives the frame
    the geometry of its whole size, so the map, mask and regions come back in the frame's own
    coordinates, as for a full decode; only the pixels the model sees differ (ffrt run measures
    how much: benchmarks/README.md)."""

    image: np.ndarray
    frame_height: int
    frame_width: int
    scale: int  # the frame is this many times the image on each side

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.frame_height, self.frame_width


def decode_image_bytes(
    data: bytes, limits: ImageLimits = DEFAULT_LIMITS, spec: InputSpec | None = None, where: str = "image data",
    reduce: int = 1, gray: bool = False,
) -> np.ndarray:
    """Decode an encoded image (the bytes of a PNG, JPEG, ... file) to BGR uint8 HxWx3.

    The size in the header is checked against ``limits`` before anything is decoded; errors
    are ImageFileError naming ``where``. Used for files and for encoded images that arrive
    over the network (``ffrt_detector`` on Triton). ``reduce`` (2, 4 or 8) decodes at that
    fraction of the size (:data:`REDUCED_DECODE_FLAGS`; a JPEG's decoder scales as it decodes).
    ``gray``: the luminance only, uint8 HxW (:data:`GRAY_DECODE_FLAGS`).
    """
    if not data:
        raise ImageFileError(f"{where}: empty (0 bytes); the image was not written or sent completely.")
    most = _most_bytes(limits)
    if most is not None and len(data) > most:
        raise ImageFileError(
            f"{where}: {len(data) / 1e9:.2f} GB, more than any image within the limit max_pixels={limits.max_pixels} "
            "can take; it was not decoded. Raise the limit if such images are expected."
        )
    size = image_size(data)
    if size is None:
        # Decoding to find out would let a few hundred bytes allocate gigabytes (the decoders
        # are more lenient than any header check); OPENCV_IO_MAX_IMAGE_PIXELS cannot stand in
        # for this: OpenCV reads it once, when cv2 is loaded, for the whole process, so it
        # cannot follow each Detector's max_pixels.
        raise ImageFileError(
            f"{where}: cannot be decoded as an image: its pixel size cannot be read from the file header "
            f"({_format_name(data)}), and decoding it without knowing could take any amount of memory. "
            "Re-save it as PNG, JPEG, BMP, TIFF or WebP."
        )
    problem = limits.problem(*size, spec)
    if problem is not None:
        raise ImageFileError(f"{where}: {problem} (size read from the file header; the file was not decoded)")
    try:
        image = decode_image(data, GRAY_DECODE_FLAGS[reduce] if gray else
                             REDUCED_DECODE_FLAGS[reduce] if reduce > 1 else cv2.IMREAD_COLOR)
    except Undecodable as e:
        raise ImageFileError(f"{where}: cannot be decoded as an image ({e}). Re-save it as PNG, JPEG, BMP or TIFF.") from e
    # EXIF orientation may transpose the header's size; the limits are checked on what came out.
    problem = limits.problem(image.shape[0], image.shape[1], spec)
    if problem is not None:
        raise ImageFileError(f"{where}: {problem}")
    return image


_KNOWN_MAGIC = (
    (b"\xff\xd8", "a JPEG whose segments do not lead to a frame header"),
    (b"\x89PNG", "a PNG without a valid IHDR"),
    (b"RIFF", "a RIFF/WebP file without a VP8/VP8L/VP8X chunk"),
    (b"GIF8", "a GIF with a damaged header"),
)


def _format_name(data: bytes) -> str:
    for magic, name in _KNOWN_MAGIC:
        if data.startswith(magic):
            return name
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF, whose size this runtime does not read"
    return "an unrecognised format or a damaged header"


def to_uint8_image(
    image: object, color_order: str = "BGR", limits: ImageLimits = DEFAULT_LIMITS, spec: InputSpec | None = None
) -> tuple[np.ndarray, str]:
    """Validate one input and return it as a uint8 array plus the channel order it is in.

    The returned array is HxW or HxWx3 (HxWx1 is squeezed); its order is "GRAY", "BGR" or
    "RGB". No resize and no colour conversion yet: those are cheaper on the smaller,
    resized image (see :func:`to_model_rgb`).
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image_file(image, limits, spec), "BGR"
    if image is None:
        raise InvalidImageError("image is None. The camera grab or the file read before this call failed.")
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(_not_an_array_message(image))
    if image.size == 0:
        raise InvalidImageError(
            f"image is empty (shape {image.shape}); every dimension must be at least 1 pixel. "
            "The camera grab or crop before this call produced nothing."
        )
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 4:
            raise InvalidImageError(
                "image has 4 channels (an alpha channel). Drop it first: "
                "cv2.cvtColor(img, cv2.COLOR_BGRA2BGR) (or COLOR_RGBA2RGB with color_order='RGB')."
            )
        if channels not in (1, 3):
            raise InvalidImageError(
                f"image has {channels} channels (shape {image.shape}); expected HxW or HxWx1 (gray) or "
                "HxWx3 (colour). If the channels come first (CxHxW), use np.transpose(img, (1, 2, 0))."
            )
    elif image.ndim != 2:
        hint = (
            " It looks like a batch: use Detector.predict_batch(list(images))."
            if image.ndim == 4
            else ""
        )
        raise InvalidImageError(
            f"image has {image.ndim} dimensions (shape {image.shape}); expected HxW (gray), HxWx1 or "
            f"HxWx3.{hint}"
        )

    # The pixel limit before the dtype conversion (which may copy the whole image), the
    # minimum side after it, so that a tiny array of a wrong dtype hears about its dtype.
    limit = limits.max_pixels
    if limit is not None and image.shape[0] * image.shape[1] > limit:
        raise InvalidImageError(limits.problem(image.shape[0], image.shape[1], spec))
    image = _to_uint8(image)
    if min(image.shape[:2]) < limits.min_side:
        raise InvalidImageError(limits.problem(image.shape[0], image.shape[1], spec))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    # cv2 refuses negative strides (img[:, :, ::-1]) and some other views: hand it a
    # C-contiguous array (no copy when it already is one).
    image = np.ascontiguousarray(image)
    return image, ("GRAY" if image.ndim == 2 else color_order)


def _not_an_array_message(image: object) -> str:
    kind = type(image).__name__
    module = type(image).__module__ or ""
    if module.startswith("PIL"):
        return (
            f"image is a PIL {kind}; convert it with np.asarray(img) and pass color_order='RGB' "
            "(PIL images are RGB)."
        )
    if isinstance(image, (bytes, bytearray, memoryview)):
        return (
            f"image is {kind} (encoded file data?); decode it with "
            "cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) or pass the file path."
        )
    if isinstance(image, (list, tuple)):
        return (
            f"image is a {kind}; pass one numpy array or path per call, or use "
            "Detector.predict_batch(images) for several images."
        )
    if module.startswith("torch"):
        return f"image is a torch {kind}; convert it with tensor.cpu().numpy() (HxWxC uint8)."
    return f"image is a {module + '.' if module not in ('', 'builtins') else ''}{kind}; expected a numpy array or a file path."


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype in (np.float32, np.float64):
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = int(np.count_nonzero(~np.isfinite(image)))
            raise InvalidImageError(
                f"image ({image.dtype}) contains {bad} NaN/inf value(s). Fix the computation that produced "
                "it, or replace them, e.g. np.nan_to_num(img, nan=0.0, posinf=1.0, neginf=0.0)."
            )
        if lo < 0.0 or hi > 1.0:
            raise InvalidImageError(
                f"float image values must lie in [0, 1]; this one spans [{lo:g}, {hi:g}]. If it holds "
                "0-255 values, pass np.clip(img, 0, 255).astype(np.uint8) instead; otherwise scale it to [0, 1]."
            )
        # rint, not truncation: 0.999 must become 255, not 254 (the trainer works on uint8 files).
        return np.rint(image * 255.0).astype(np.uint8)
    if image.dtype == np.uint16:
        raise InvalidImageError(
            "image is uint16 (16-bit); ffrt models take 8-bit images. Convert with "
            "(img >> 8).astype(np.uint8) for full-range 16-bit data, or "
            "cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U) to stretch a 10/12-bit range."
        )
    if image.dtype == np.bool_:
        raise InvalidImageError("image is bool (a mask?); convert with img.astype(np.uint8) * 255.")
    if image.dtype == np.float16:
        raise InvalidImageError("image is float16; convert with img.astype(np.float32) (values in [0, 1]).")
    raise InvalidImageError(
        f"image dtype {image.dtype} is not supported; pass uint8 (0-255) or float32/float64 in [0, 1], "
        "e.g. np.clip(img, 0, 255).astype(np.uint8)."
    )


def check_model_batch(batch: object, spec: InputSpec) -> np.ndarray:
    """A batch already at the model size (uint8 [N, H, W, 3], N >= 1), C-contiguous, or
    InvalidImageError: what ``Detector.run_model`` runs without preprocessing."""
    batch = np.asarray(batch)
    h, w = spec.height, spec.width
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (h, w, 3) or len(batch) == 0:
        raise InvalidImageError(
            f"run_model takes a uint8 batch of shape [N, {h}, {w}, 3] (N >= 1), not {batch.dtype} {batch.shape}; "
            "use det(image) or det.predict_batch(images) for images of any size."
        )
    return np.ascontiguousarray(batch)


def frame_geometry(frame_size: tuple[int, int], spec: InputSpec) -> FrameGeometry:
    """Where a (height, width) frame lands in this model's input (ffcore.geometry)."""
    return FrameGeometry.of(frame_size, (spec.height, spec.width), spec.resize_mode, spec.resize_interpolation)


def to_model_rgb(image: np.ndarray, order: str, spec: InputSpec | FrameGeometry) -> np.ndarray:
    """Resize a validated uint8 image into the model input, then bring it to RGB HxWx3.

    Resizing first and converting colour second is bit-identical to the trainer's
    convert-then-resize (cv2.resize treats channels independently) and cheaper: a 5 MP
    frame is converted after it shrank to the model size, not before. ``spec`` may be the
    frame's geometry, when the caller has computed it already.
    """
    geometry = spec if isinstance(spec, FrameGeometry) else frame_geometry(image.shape[:2], spec)
    small = geometry.to_model(image)
    if order == "GRAY":
        return cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
    if order == "BGR":
        return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    return small


def prepare_batch(
    images: Sequence[object],
    spec: InputSpec,
    color_order: str = "BGR",
    limits: ImageLimits = DEFAULT_LIMITS,
    errors: str = "raise",
) -> PreparedBatch:
    """Validate, decode, resize and colour-convert ``images`` into one uint8 NHWC RGB batch.

    errors="raise": every image is checked before the batch is returned, so a bad image
    anywhere in the list raises before anything reaches a backend. Errors name the image's
    position when there is more than one.
    errors="return": a refused image is left out of the batch and its error is returned in
    ``PreparedBatch.errors``; the others go on.
    """
    color_order = check_color_order(color_order)
    if errors not in ("raise", "return"):
        raise InvalidArgumentError(f"errors must be 'raise' or 'return', not {errors!r}.")
    n = len(images)
    batch = np.empty((n, spec.height, spec.width, 3), dtype=np.uint8)
    geometries: list[FrameGeometry] = []
    positions: list[int] = []
    refused: list[tuple[int, InvalidImageError]] = []
    for i, item in enumerate(images):
        frame_size = None
        try:
            if isinstance(item, ReducedFrame):
                # Decoded by OpenCV, so BGR (or gray) whatever the Detector's colour order says.
                frame_size, (image, order) = item.frame_size, to_uint8_image(item.image, "BGR", limits, spec)
            else:
                image, order = to_uint8_image(item, color_order, limits, spec)
        except InvalidImageError as e:
            # The same class with the position prepended: "which one?" is the first
            # question when one frame of a batch is bad.
            located = e if n == 1 else type(e)(f"image {i} of {n}: {e}")
            if errors == "raise":
                if located is e:
                    raise
                raise located from e
            refused.append((i, located))
            continue
        geometry = frame_geometry(frame_size or image.shape[:2], spec)
        batch[len(geometries)] = to_model_rgb(image, order, geometry)
        geometries.append(geometry)
        positions.append(i)
    return PreparedBatch(
        batch=batch[: len(geometries)], geometries=tuple(geometries), positions=tuple(positions), errors=tuple(refused)
    )
