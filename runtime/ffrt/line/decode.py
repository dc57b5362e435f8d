"""How ``ffrt run`` reads image files: on a pool of decoding threads, and JPEG frames that are
several times the model input at a reduced resolution.

A line's frames are often megapixels and the model's input a few hundred pixels a side: a
full decode of a 2-megapixel JPEG, then an area resize down to the model size, costs more CPU
than the model itself on a small CPU. libjpeg can decode at 1/2, 1/4 or 1/8 of the size (it
scales the inverse DCT, so the smaller picture costs a fraction of the full one), and the
resize then starts from that picture. :func:`reduction` picks the largest such factor that
leaves the frame at least the model input's size on both sides; the frame keeps the geometry
of its whole size (``ffrt.preprocess.ReducedFrame``), so maps, masks and regions come back in
the frame's own coordinates. What it changes in the scores was measured on development
images (benchmarks/README.md, "Line throughput"), and ``--full-decode`` turns it off.

The decoding threads (:class:`DecodeSettings` ``threads``) read the files of every source
ahead of the Detector, each source's frames still handed over in their order
(``ffrt.line.sources.FrameReader``), so decoding overlaps with inference instead of waiting
for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ffcore.imageheader import image_size

from ..errors import InvalidArgumentError
from ..meta import InputSpec
from ..preprocess import REDUCED_DECODE_FLAGS, ImageLimits, ReducedFrame, decode_image_bytes, read_image_data

_JPEG_MAGIC = b"\xff\xd8"
#: Whether ffrt run decodes large JPEG frames at a reduced resolution unless told otherwise: on
#: only if it flipped no verdict on the development images (benchmarks/README.md).
REDUCED_DECODE_DEFAULT = False


def default_decode_threads() -> int:
    """One decoding thread per physical core: decoding is CPU work, more threads only queue."""
    from ffcore.ort import physical_core_count

    return physical_core_count() or os.cpu_count() or 1


@dataclass(frozen=True)
class DecodeSettings:
    """How ``ffrt run`` decodes image files: at reduced resolution where a JPEG allows it
    (``reduced``), on ``threads`` decoding threads (0: in each source's own thread), with at
    most ``ahead`` frames per source decoded before the Detector takes them."""

    reduced: bool = REDUCED_DECODE_DEFAULT
    threads: int = 0
    ahead: int = 0  # 0: twice the threads

    def __post_init__(self) -> None:
        for name in ("threads", "ahead"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidArgumentError(f"decode {name} must be an integer >= 0, not {v!r}.")

    @property
    def frames_ahead(self) -> int:
        return self.ahead or 2 * max(1, self.threads)


def reduction(frame_size: tuple[int, int], model_size: tuple[int, int]) -> int:
    """The largest of 8, 4 and 2 by which the frame is at least that many times the model input
    on both sides (so the reduced picture is still at least the model's size), else 1."""
    fh, fw = frame_size
    mh, mw = model_size
    for factor in sorted(REDUCED_DECODE_FLAGS, reverse=True):
        if fh >= factor * mh and fw >= factor * mw:
            return factor
    return 1


class FrameDecoder:
    """Reads one image file for ``ffrt run``: a BGR array, or a :class:`ReducedFrame` for a
    JPEG decoded at a reduced resolution. Errors are the Detector's (ImageFileError), checked
    against its limits from the file's header before anything is decoded."""

    def __init__(self, limits: ImageLimits, spec: InputSpec, reduced: bool) -> None:
        self.limits, self.spec, self.reduced = limits, spec, reduced

    def __call__(self, path: str | Path) -> np.ndarray | ReducedFrame:
        data = read_image_data(path, self.limits)
        size = image_size(data) if self.reduced and data[:2] == _JPEG_MAGIC else None
        factor = reduction(size, (self.spec.height, self.spec.width)) if size else 1
        image = decode_image_bytes(data, self.limits, self.spec, where=str(path), reduce=factor)
        if factor == 1:
            return image
        h, w = size
        if (image.shape[0] > image.shape[1]) != (h > w) and h != w:
            h, w = w, h  # the EXIF orientation turned the picture: the frame turns with it
        return ReducedFrame(image, h, w, factor)
