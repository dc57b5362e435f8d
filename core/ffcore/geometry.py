"""Where a frame lands in the model input, and how the model's map goes back onto the frame.

One definition for everyone who resizes an image to the model size: the trainer's data
loading and the exporter's parity images (``ffcore.images.resize_to_model``), the runtime's
preprocessing and postprocessing (``ffrt.stages``), the review page and ffeval. A
:class:`FrameGeometry` is computed once per frame (``FrameGeometry.of``) and then answers
every question about that frame: the resize in, the part of the model-size map that shows
the frame (letterbox padding off), and the resize back.

Two modes, recorded in each model's metadata (``InputSpec.resize_mode``):

- ``stretch``: the frame is resized to the model size, aspect ratio not kept; the whole map
  shows the frame.
- ``letterbox``: the aspect ratio is kept; the resized frame is centred and the rest padded
  with 0, so the map's content area is a centred rectangle.

Interpolation: ``area`` (INTER_AREA, which averages instead of aliasing when shrinking; the
trainer's choice) or ``linear``. Maps go back bilinearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

RESIZE_MODES = ("stretch", "letterbox")
_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


def interpolation_flag(name: str) -> int:
    """The cv2 flag of a metadata ``resize_interpolation`` ("area" -> INTER_AREA; any other
    value: INTER_LINEAR, the only other one files carry)."""
    return _INTERPOLATIONS.get(name, cv2.INTER_LINEAR)


@dataclass(frozen=True, slots=True)
class FrameGeometry:
    """One frame's placement in the model input. Build it with :meth:`of`."""

    frame_height: int
    frame_width: int
    model_height: int
    model_width: int
    mode: str
    interpolation: str
    #: The content area: where the resized frame sits in the model input.
    top: int
    left: int
    content_height: int
    content_width: int

    @classmethod
    def of(cls, frame_size: tuple[int, int], model_size: tuple[int, int], mode: str = "stretch",
           interpolation: str = "area") -> "FrameGeometry":
        """The geometry of a (height, width) frame in a (height, width) model input."""
        fh, fw = int(frame_size[0]), int(frame_size[1])
        mh, mw = int(model_size[0]), int(model_size[1])
        if mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {mode!r}; choose stretch or letterbox")
        if mode == "stretch" or (fh, fw) == (mh, mw):
            return cls(fh, fw, mh, mw, mode, interpolation, 0, 0, mh, mw)
        scale = min(mh / fh, mw / fw)
        nh, nw = max(1, min(mh, round(fh * scale))), max(1, min(mw, round(fw * scale)))
        return cls(fh, fw, mh, mw, mode, interpolation, (mh - nh) // 2, (mw - nw) // 2, nh, nw)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.frame_height, self.frame_width

    @property
    def model_size(self) -> tuple[int, int]:
        return self.model_height, self.model_width

    @property
    def content(self) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the content area in the model input."""
        return self.top, self.left, self.content_height, self.content_width

    @property
    def padded(self) -> bool:
        """Whether part of the model input is padding (letterbox with another aspect ratio)."""
        return (self.content_height, self.content_width) != self.model_size

    def to_model(self, image: np.ndarray) -> np.ndarray:
        """``image`` (this frame, HxW or HxWxC) resized into the model input; the frame
        itself when it is already at the model size."""
        if image.shape[:2] == self.model_size:
            return image
        flag = interpolation_flag(self.interpolation)
        if not self.padded:
            return cv2.resize(image, (self.model_width, self.model_height), interpolation=flag)
        out = np.zeros(self.model_size + image.shape[2:], dtype=image.dtype)
        resized = cv2.resize(image, (self.content_width, self.content_height), interpolation=flag)
        out[self.top : self.top + self.content_height, self.left : self.left + self.content_width] = resized.reshape(
            (self.content_height, self.content_width) + image.shape[2:]
        )
        return out

    def crop(self, model_map: np.ndarray) -> np.ndarray:
        """The part of a model-size map that shows the frame (a view; all of it unless padded)."""
        if not self.padded:
            return model_map
        return model_map[self.top : self.top + self.content_height, self.left : self.left + self.content_width]

    def to_frame(self, model_map: np.ndarray) -> np.ndarray:
        """A model-size map cropped to the content area and resized bilinearly to the frame's
        size; always a new array (a view would pin the whole batch's maps in memory)."""
        content = self.crop(model_map)
        if content.shape[:2] == self.frame_size:
            return content.copy()
        return cv2.resize(content, (self.frame_width, self.frame_height), interpolation=cv2.INTER_LINEAR)
