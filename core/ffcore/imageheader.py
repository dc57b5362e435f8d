"""An image file's pixel size, read from its header without decoding it.

Why: a few kilobytes of PNG can declare 20000 x 20000 pixels, and OpenCV allocates the
whole decoded image before it finds out whether the data is even there (a decompression
bomb). Reading the size first lets the runtime (ffrt.Detector) refuse such a file at the cost of parsing
a few bytes.

Formats are recognised by their leading bytes (magic numbers), as OpenCV's decoder does,
not by the file name: PNG, JPEG, BMP, TIFF (classic and BigTIFF, first page: the one
``cv2.imdecode`` reads), WebP, GIF, JPEG 2000 (JP2 and raw codestream), PNM/PAM/PFM,
Radiance HDR and Sun raster. For anything else (AVIF, OpenEXR, ...) and for a header this
module cannot make sense of, :func:`image_size` returns None, and the runtime refuses the
file without decoding it: OpenCV's decoders tolerate damage this reader does not follow
(libjpeg skips stray bytes between markers, for one), so "size unknown" must never mean
"decode and see".

Where a decoder is lenient, this reader follows it: the JPEG walk skips stray bytes the
way libjpeg's marker reader does, so a stray byte cannot hide the frame size from it.
"""

from __future__ import annotations

import re
import struct

# JPEG start-of-frame markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share
# the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n\r]*)*(\d+)")
_PAM_FIELD = re.compile(rb"^(WIDTH|HEIGHT)\s+(\d+)", re.MULTILINE)
_RADIANCE_SIZE = re.compile(rb"\n\n([-+])Y (\d+) ([-+])X (\d+)")


def image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) declared by the file's header, or None if not known without decoding."""
    head = bytes(data[:32])
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if head.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if head.startswith(b"BM"):
            return _bmp(data)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff(data)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp(data)
        if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"F", b"f"):
            return _pnm(data)
        if head.startswith(b"P7"):
            return _pam(data)
        if head.startswith((b"#?RADIANCE", b"#?RGBE")):
            return _radiance(data)
        if head.startswith((b"GIF87a", b"GIF89a")):
            return _gif(data)
        if head.startswith(b"\xff\x4f\xff\x51"):  # JPEG 2000 codestream: SOC then SIZ
            return _j2k_siz(data, 0)
        if head.startswith(_JP2_SIGNATURE):
            return _jp2(data)
        if head.startswith(b"\x59\xa6\x6a\x95"):  # Sun raster
            w, h = struct.unpack(">II", head[4:12])
            return h, w
    except (struct.error, IndexError, ValueError):
        return None  # truncated or garbled header: the decoder reports it
    return None


def _png(data) -> tuple[int, int] | None:
    if bytes(data[12:16]) != b"IHDR":
        return None
    w, h = struct.unpack(">II", bytes(data[16:24]))
    return h, w


def _jpeg(data) -> tuple[int, int] | None:
    # Walk the segments by their lengths (never scan for byte patterns: an EXIF thumbnail
    # inside APP1 is a whole JPEG with its own SOF, and is not the image). Between segments,
    # skip what libjpeg's next_marker() skips: any bytes up to an 0xFF, fill 0xFF bytes, and
    # stuffed FF 00 pairs; otherwise a stray byte before the frame header hides its size
    # here while the decoder finds it.
    i, n = 2, len(data)
    while True:
        while i < n and data[i] != 0xFF:
            i += 1
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1  # i: just after the marker
        if marker == 0x00 or marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, end of image, start of scan before any frame: libjpeg refuses
            return None
        length = struct.unpack(">H", bytes(data[i : i + 2]))[0]
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", bytes(data[i + 3 : i + 7]))
            return (h, w) if h > 0 else None  # height 0: defined later by a DNL marker
        if length < 2:  # libjpeg refuses a segment shorter than its own length field
            return None
        i += length


def _bmp(data) -> tuple[int, int] | None:
    dib = struct.unpack("<I", bytes(data[14:18]))[0]
    if dib == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack("<HH", bytes(data[18:22]))
    else:
        w, h = struct.unpack("<ii", bytes(data[18:26]))
    return abs(h), abs(w)  # negative height = rows stored top-down


def _tiff(data) -> tuple[int, int] | None:
    endian = "<" if bytes(data[:2]) == b"II" else ">"
    big = struct.unpack(endian + "H", bytes(data[2:4]))[0] == 43
    if big:
        offset = struct.unpack(endian + "Q", bytes(data[8:16]))[0]
        count = struct.unpack(endian + "Q", bytes(data[offset : offset + 8]))[0]
        first, size = offset + 8, 20
    else:
        offset = struct.unpack(endian + "I", bytes(data[4:8]))[0]
        count = struct.unpack(endian + "H", bytes(data[offset : offset + 2]))[0]
        first, size = offset + 2, 12
    found: dict[int, int] = {}
    for k in range(min(count, 4096)):
        entry = bytes(data[first + k * size : first + (k + 1) * size])
        tag, kind = struct.unpack(endian + "HH", entry[:4])
        if tag not in (256, 257):  # ImageWidth, ImageLength
            continue
        value = entry[12:] if big else entry[8:]
        if kind == 3:  # SHORT
            found[tag] = struct.unpack(endian + "H", value[:2])[0]
        elif kind == 4:  # LONG
            found[tag] = struct.unpack(endian + "I", value[:4])[0]
        elif kind == 16 and big:  # LONG8
            found[tag] = struct.unpack(endian + "Q", value[:8])[0]
        if len(found) == 2:
            return found[257], found[256]
    return None


def _webp(data) -> tuple[int, int] | None:
    chunk = bytes(data[12:16])
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        w, h = struct.unpack("<HH", bytes(data[26:30]))
        return h & 0x3FFF, w & 0x3FFF
    if chunk == b"VP8L":  # lossless: width-1 and height-1 packed in 14 bits each
        bits = struct.unpack("<I", bytes(data[21:25]))[0]
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1, height-1
        b = bytes(data[24:30])
        return int.from_bytes(b[3:6], "little") + 1, int.from_bytes(b[0:3], "little") + 1
    return None


def _pnm(data) -> tuple[int, int] | None:
    head = bytes(data[2:1024])
    m1 = _PNM_TOKEN.match(head)
    if m1 is None:
        return None
    m2 = _PNM_TOKEN.match(head, m1.end())
    if m2 is None:
        return None
    return int(m2.group(1)), int(m1.group(1))


def _pam(data) -> tuple[int, int] | None:
    head = bytes(data[:1024]).split(b"ENDHDR", 1)[0]
    fields = {k: int(v) for k, v in _PAM_FIELD.findall(head)}
    return (fields[b"HEIGHT"], fields[b"WIDTH"]) if len(fields) == 2 else None


def _radiance(data) -> tuple[int, int] | None:
    # Header lines, a blank line, then the resolution string. "-Y H +X W" is what writers
    # (OpenCV included) use; the rare rotated orientations fall back to decoding.
    m = _RADIANCE_SIZE.search(bytes(data[:4096]))
    if m is None:
        return None
    return int(m.group(2)), int(m.group(4))


def _gif(data) -> tuple[int, int] | None:
    # The logical screen size: what OpenCV's GIF decoder allocates for, whatever the frames say.
    w, h = struct.unpack("<HH", bytes(data[6:10]))
    return h, w


def _jp2(data) -> tuple[int, int] | None:
    # The size that counts is the codestream's (SIZ), which the decoder uses; the 'ihdr' box
    # may say something else. Walk the top-level boxes to the codestream box 'jp2c'.
    i, n = 0, len(data)
    while i + 8 <= n:
        length, kind = struct.unpack(">I4s", bytes(data[i : i + 8]))
        start = i + 8
        if length == 1:  # 64-bit length after the type
            length = struct.unpack(">Q", bytes(data[i + 8 : i + 16]))[0]
            start = i + 16
        if kind == b"jp2c":
            return _j2k_siz(data, start) if bytes(data[start : start + 4]) == b"\xff\x4f\xff\x51" else None
        if length == 0 or i + length <= i:  # 0: the box runs to the end of the file
            return None
        i += length
    return None


def _j2k_siz(data, start: int) -> tuple[int, int] | None:
    # SOC (2 bytes), SIZ marker (2), Lsiz (2), Rsiz (2), then Xsiz, Ysiz, XOsiz, YOsiz.
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", bytes(data[start + 8 : start + 24]))
    if xsiz <= xo or ysiz <= yo:
        return None
    return ysiz - yo, xsiz - xo
