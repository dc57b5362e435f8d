"""Reading images and ground-truth masks, and the resize the model input gets (its
geometry: :mod:`ffcore.geometry`).

numpy + OpenCV only. The one place image files are opened and decoded, for the trainer,
the tools and the runtime (ffrt.preprocess adds its size limits and its own messages):
:func:`read_image_bytes` opens only regular files (a FIFO would block, a device stream
without end) and reads them whole, ``cv2.imdecode`` decodes from memory (so non-ASCII
paths work on every platform, which ``cv2.imread`` does not), and the size in the file
header (:mod:`ffcore.imageheader`) is available before anything is decoded.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import cv2
import numpy as np

from .geometry import FrameGeometry
from .imageheader import image_size


class DataError(ValueError):
    """A data folder, spec or file cannot be used; the message says why and what to do."""


class UnreadableFile(DataError):
    """An image path that cannot be read as a file; ``reason`` is the message without the path."""

    def __init__(self, path: Path, reason: str, size: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.size = path, reason, size


class FileTooLarge(UnreadableFile):
    """The file is larger than the caller's ``max_bytes`` (``size`` holds its byte count)."""


class Undecodable(DataError):
    """The bytes are not an image OpenCV can decode; the message is the reason (no path)."""


def read_image_bytes(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of ``path``, which must be a regular, non-empty file of at most ``max_bytes``.

    Opened non-blocking and checked with fstat on the open descriptor (not stat on the
    name, which another process could swap): opening a FIFO for reading would otherwise
    wait for a writer forever.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UnreadableFile(path, "no such image file. Check the path and the working directory.") from None
    except IsADirectoryError:  # Windows; on POSIX a directory opens and fstat says so below
        raise UnreadableFile(path, "is a directory, not an image file. Pass the image files inside it.") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnreadableFile(path, "is a symbolic link that leads back to itself (a link loop). Fix or remove the link.") from e
        raise UnreadableFile(path, f"cannot be read ({e.strerror or e}). Check the file's permissions.") from e
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UnreadableFile(path, "is a directory, not an image file. Pass the image files inside it.")
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(
                path, f"is a {_file_kind(st.st_mode)}, not a regular file; images are read only from regular files. "
                "Save the frame to a file, or pass it as a numpy array.")
        if st.st_size == 0:
            raise UnreadableFile(path, "the file is empty (0 bytes); the image was not written completely.")
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileTooLarge(path, f"the file is {st.st_size / 1e9:.2f} GB, more than the {max_bytes / 1e9:.2f} GB "
                               "allowed; it was not read.", st.st_size)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError as e:
        raise UnreadableFile(path, f"cannot be read ({e.strerror or e}).") from e
    finally:
        os.close(fd)
    if not data:
        raise UnreadableFile(path, "the file is empty (0 bytes); the image was not written completely.")
    return data


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def decode_image(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """``cv2.imdecode`` of a file's bytes (IMREAD_COLOR: BGR, gray files as 3 equal channels).
    Raises Undecodable with the reason."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:  # e.g. OpenCV's own size limit, or a decoder that throws instead of returning None
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise Undecodable(f"OpenCV: {reason}") from e
    if image is None or image.size == 0:
        raise Undecodable(f"{len(data)} bytes; corrupt, truncated, or a format OpenCV does not read")
    return image


def _read(path: str | Path, flags: int, what: str) -> np.ndarray:
    """Decode a data file; any failure is one DataError saying to remove the file."""
    path = Path(path)
    try:
        return decode_image(read_image_bytes(path), flags)
    except DataError as e:
        reason = e.reason if isinstance(e, UnreadableFile) else str(e)
        raise DataError(f"{path}: not a decodable {what} ({reason}); remove it from the folder") from e


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB HxWx3 (gray files become 3 equal channels)."""
    return cv2.cvtColor(_read(path, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


def resize_to_model(image: np.ndarray, size: int | tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """The resize the runtime applies too (recorded in the metadata as 'area' + the resize
    mode; both sides go through :class:`ffcore.geometry.FrameGeometry`). ``size`` is a square
    side or (height, width)."""
    h, w = (size, size) if isinstance(size, int) else size
    return FrameGeometry.of(image.shape[:2], (h, w), mode, "area").to_model(image)


def read_mask(path: Path | None, size: int | tuple[int, int] | None) -> np.ndarray:
    """Ground-truth mask as bool (white = defect), resized (nearest) to ``size`` (square
    side or (h, w); None: the file's own size). No file means a defect-free image."""
    if path is None:
        if size is None:
            raise ValueError("read_mask(None, None): a missing mask needs a size")
        h, w = (size, size) if isinstance(size, int) else size
        return np.zeros((h, w), dtype=bool)
    mask = _read(path, cv2.IMREAD_GRAYSCALE, "mask image")
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return mask > 127


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as decoding gives it, from the header where that
    is safe (:mod:`ffcore.imageheader`), else decoded."""
    path = Path(path)
    try:
        data = read_image_bytes(path)
    except UnreadableFile as e:
        raise DataError(f"{path}: not a decodable image ({e.reason}); remove it from the folder") from e
    # JPEG and TIFF may carry an EXIF orientation, which imdecode applies (its default):
    # their header size can be the transpose of what training sees, so they are decoded.
    size = None if data.startswith((b"\xff\xd8", b"II*\x00", b"MM\x00*")) else image_size(data)
    if size is not None:
        return size
    try:
        img = decode_image(data, cv2.IMREAD_GRAYSCALE)
    except Undecodable as e:
        raise DataError(f"{path}: not a decodable image ({e}); remove it from the folder") from e
    return int(img.shape[0]), int(img.shape[1])
