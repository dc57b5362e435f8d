"""How ``ffrt run`` reads image files: on a pool of decoding threads, and JPEG frames that are
several times the model input at a reduced resolution.

A line's frames are often megapixels and the model's input a few hundred pixels a side: a
full decode of a 2-megapixel JPEG, then an area resize down to the model size, costs more CPU
than the model itself on a small CPU. libjpeg can decode at 1/2, 1/4 or 1/8 of the size (it
scales the inverse DCT, so the smaller picture costs a fraction of the full one), and the
resize then starts from that picture. :func:`reduction` picks the largest such factor that
leaves the decoded picture at least :data:`MIN_OVERSAMPLE` times the model input on both
sides, so that the area resize still averages several decoded pixels into each model pixel,
as it does from the whole frame; the frame keeps the geometry of its whole size
(``ffrt.preprocess.ReducedFrame``), so maps, masks and regions come back in the frame's own
coordinates. What it changes in the scores was measured on development images
(benchmarks/README.md, "Line throughput"), and ``--no-reduced-decode`` turns it off.

A model that reads the luminance only (``InputSpec.color == "luma"``, BT.601: the Y plane JPEG
keeps at full resolution) gets a JPEG frame's own Y plane, decoded without the colour
conversion, whatever the reduction: a third of the pixels to resize, and the very values the
model would compute from the colour frame, up to its rounding (benchmarks/README.md, "Line
throughput", measures the difference).

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
#: because, at MIN_OVERSAMPLE, its score changes on development images were about the JPEG
#: codec's own (quality 90 against 95) on ELPV cells, and a few percent of the threshold on
#: DeepPCB boards, with no more verdicts changed than the codec changes (benchmarks/README.md,
#: "Line throughput").
REDUCED_DECODE_DEFAULT = True
#: The reduced picture keeps at least this many times the model input on both sides. At 1.2-1.6x
#: (a 2-megapixel frame at 1/4 for a 256x256 model) the scores moved 4x more than the codec's own
#: noise; from 2.4x on, no more than it.
MIN_OVERSAMPLE = 2


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
    """The largest of 8, 4 and 2 by which the frame is at least ``MIN_OVERSAMPLE`` times that
    many times the model input on both sides (so the reduced picture is still at least
    MIN_OVERSAMPLE times the model's size), else 1."""
    fh, fw = frame_size
    mh, mw = model_size
    for factor in sorted(REDUCED_DECODE_FLAGS, reverse=True):
        if fh >= MIN_OVERSAMPLE * factor * mh and fw >= MIN_OVERSAMPLE * factor * mw:
            return factor
    return 1


class FrameDecoder:
    """Reads one image file for ``ffrt run``: a BGR array (a luma model's JPEG: its gray Y
    plane), or a :class:`ReducedFrame` for a JPEG decoded at a reduced resolution. Errors are
    the Detector's (ImageFileError), checked against its limits from the file's header before
    anything is decoded."""

    def __init__(self, limits: ImageLimits, spec: InputSpec, reduced: bool) -> None:
        self.limits, self.spec, self.reduced = limits, spec, reduced

    def __call__(self, path: str | Path) -> np.ndarray | ReducedFrame:
        data = read_image_data(path, self.limits)
        jpeg = data[:2] == _JPEG_MAGIC
        size = image_size(data) if self.reduced and jpeg else None
        factor = reduction(size, (self.spec.height, self.spec.width)) if size else 1
        image = decode_image_bytes(data, self.limits, self.spec, where=str(path), reduce=factor,
                                   gray=jpeg and self.spec.color == "luma")
        if factor == 1:
            return image
        h, w = size
        if (image.shape[0] > image.shape[1]) != (h > w) and h != w:
            h, w = w, h  # the EXIF orientation turned the picture: the frame turns with it
        return ReducedFrame(image, h, w, factor)
