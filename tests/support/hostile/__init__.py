"""The hostile-input corpus: small files that declare huge images, damaged headers, and the
fuzzed variants of real files in every format OpenCV decodes here.

Generated at test time (nothing large is committed). ``python tests/support/hostile DIR``
writes the corpus to DIR for a manual round (``ffrt detect DIR``, a serve request, ...).

Seeds are real files written by OpenCV; the declaring variants patch only the size fields of
their headers, so the rest of each file stays what a real decoder accepts.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator

import cv2
import numpy as np

SEED_SHAPE = (37, 53)  # (height, width): odd, not square, so a transposed size shows


def seeds() -> dict[str, bytes]:
    """One real file per format (and variant) OpenCV encodes here, all SEED_SHAPE."""
    image = np.random.default_rng(23).integers(0, 256, (*SEED_SHAPE, 3), dtype=np.uint8)
    gray = image[:, :, 0]
    specs = {
        "png": (".png", image, []),
        "jpeg": (".jpg", image, []),
        "jpeg-progressive": (".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "bmp": (".bmp", image, []),
        "tiff": (".tiff", image, []),
        "tiff-raw": (".tif", image, [cv2.IMWRITE_TIFF_COMPRESSION, 1]),
        "webp": (".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 90]),  # lossy (VP8)
        "webp-lossless": (".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101]),
        "gif": (".gif", image, []),
        "jp2": (".jp2", image, []),
        "ppm": (".ppm", image, []),
        "pgm": (".pgm", gray, []),
        "pam": (".pam", image, []),
        "pfm": (".pfm", image.astype(np.float32) / 255, []),
        "sunraster": (".ras", image, []),
        "hdr": (".hdr", image.astype(np.float32) / 255, []),
    }
    out = {}
    for name, (ext, img, params) in specs.items():
        ok, buf = cv2.imencode(ext, img, params)
        if ok:
            out[name] = buf.tobytes()
    return out


def declaring(name: str, data: bytes, width: int, height: int) -> bytes | None:
    """``data`` (a seed of format ``name``) with its header declaring width x height."""
    b = bytearray(data)
    if name == "png":
        b[16:24] = struct.pack(">II", width, height)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    elif name.startswith("jpeg"):
        sof = re.search(rb"\xff[\xc0-\xc2]", bytes(b[2:])).start() + 2
        b[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    elif name == "bmp":
        b[18:26] = struct.pack("<ii", width, height)
    elif name == "gif":
        b[6:10] = struct.pack("<HH", width, height)
    elif name == "webp-lossless":
        bits = struct.unpack("<I", bytes(b[21:25]))[0] & ~((1 << 28) - 1)
        b[21:25] = struct.pack("<I", bits | (height - 1) << 14 | (width - 1))
    elif name == "webp":
        b[26:30] = struct.pack("<HH", width, height)
    elif name in ("ppm", "pgm", "pfm"):
        return re.sub(rb"^(P.\s+)53(\s+)37", rb"\g<1>%d\g<2>%d" % (width, height), bytes(b), count=1)
    elif name == "pam":
        return bytes(b).replace(b"WIDTH 53", b"WIDTH %d" % width, 1).replace(b"HEIGHT 37", b"HEIGHT %d" % height, 1)
    elif name == "hdr":
        return bytes(b).replace(b"-Y 37 +X 53", b"-Y %d +X %d" % (height, width), 1)
    elif name == "sunraster":
        b[4:12] = struct.pack(">II", width, height)
    elif name.startswith("tiff"):
        return _tiff_declaring(b, width, height)
    elif name == "jp2":
        siz = bytes(b).index(b"\xff\x4f\xff\x51") + 2
        b[siz + 6 : siz + 14] = struct.pack(">II", width, height)
    else:
        return None
    return bytes(b)


def _tiff_declaring(b: bytearray, width: int, height: int) -> bytes:
    e = "<" if b[:2] == b"II" else ">"
    ifd = struct.unpack(e + "I", bytes(b[4:8]))[0]
    for k in range(struct.unpack(e + "H", bytes(b[ifd : ifd + 2]))[0]):
        at = ifd + 2 + 12 * k
        tag = struct.unpack(e + "H", bytes(b[at : at + 2]))[0]
        if tag in (256, 257):
            b[at + 2 : at + 12] = struct.pack(e + "HII", 4, 1, width if tag == 256 else height)
    return bytes(b)


def stray_sof_jpeg(width: int = 15000, height: int = 15000) -> bytes:
    """Issue 23's JPEG: a tiny real JPEG declaring width x height, one stray byte before its
    frame header (libjpeg skips it with a warning and decodes the declared size)."""
    small = cv2.imencode(".jpg", np.full((8, 8), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 10])[1].tobytes()
    data = declaring("jpeg", small, width, height)
    sof = re.search(rb"\xff[\xc0-\xc2]", data[2:]).start() + 2
    return data[:sof] + b"\x00" + data[sof:]


def tiny_gif(width: int = 15000, height: int = 15000) -> bytes:
    """Issue 23's GIF: a few dozen bytes whose screen and frame declare width x height."""
    screen = struct.pack("<HH", width, height)
    frame = b"," + struct.pack("<HHHH", 0, 0, width, height) + b"\x00"
    return b"GIF89a" + screen + b"\x00\x00\x00" + frame + b"\x02\x02\x44\x01\x00;"


def mutants(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Damaged variants of one file: truncated at every short length (and at spread-out
    longer ones), and a stray byte inserted at every early position and before every 0xFF
    within the first kilobyte (where marker-based formats can lose their way)."""
    n = len(data)
    for cut in sorted(set(range(1, min(n, 96))) | {n * k // 10 for k in range(1, 10)}):
        yield f"cut{cut}", data[:cut]
    positions = set(range(1, min(n, 96))) | {i for i in range(1, min(n, 1024)) if data[i] == 0xFF}
    for at in sorted(positions):
        for stray in (b"\x00", b"\xff"):
            yield f"stray{stray.hex()}@{at}", data[:at] + stray + data[at:]


def corpus(width: int = 15000, height: int = 15000) -> dict[str, bytes]:
    """The named hostile files: the issue's two, and every seed declaring width x height."""
    out = {"stray-sof.jpg": stray_sof_jpeg(width, height), "tiny.gif": tiny_gif(width, height)}
    for name, data in seeds().items():
        big = declaring(name, data, width, height)
        if big is not None:
            out[f"declaring-{name}"] = big
    return out
