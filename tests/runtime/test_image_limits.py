"""Images a Detector refuses by size, and paths it refuses by kind (issue 10, items 3 and 4).

Real files throughout: PNGs whose headers declare huge sizes (a decompression bomb with a
real zlib stream, and truncated ones), files written by OpenCV in every format the header
reader knows, a real FIFO made with os.mkfifo, all through the real Detector.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import solid_bgr
from ffrt import Detector, ImageFileError, InvalidArgumentError, InvalidImageError
from ffcore.imageheader import image_size
from ffrt.preprocess import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE

ROOT = Path(__file__).resolve().parents[2]
RED_BGR = (0, 0, 255)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_declaring(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """An 8-bit gray PNG whose IHDR says width x height. ``rows``: how many rows of zeros the
    IDAT really holds (None: all of them, compressed chunk by chunk: a real bomb)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = bytearray()
    todo = height if rows is None else rows
    block = max(1, (4 << 20) // len(row))
    while todo > 0:
        k = min(block, todo)
        idat += comp.compress(row * k)
        todo -= k
    idat += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(idat)) + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def det(red_model):
    return Detector(red_model, threads=1)


def test_defaults_are_stated(det):
    assert (DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE) == (100_000_000, 8)
    assert (det.limits.max_pixels, det.limits.min_side) == (100_000_000, 8)


def test_png_declaring_50000_squared_is_a_clear_error(det, tmp_path):
    # Issue 10: a raw cv2.error (OpenCV's own 2^30 pixel limit) escaped from Detector.
    bomb = png_declaring(tmp_path / "bomb.png", 50_000, 50_000, rows=64)
    with pytest.raises(ImageFileError) as exc:
        det(bomb)
    text = str(exc.value)
    assert "50000x50000" in text and "max_pixels=100000000" in text and "header" in text
    assert det(solid_bgr(40, 50, RED_BGR)).score == pytest.approx(1.0)  # the next call works


def test_decompression_bomb_is_refused_before_decoding(red_model, tmp_path):
    # Issue 10: a small PNG declaring 20000 x 20000 was decoded in full. A real, complete
    # zlib stream of zero rows; peak RSS is read in a fresh process.
    bomb = png_declaring(tmp_path / "bomb.png", 20_000, 20_000)
    assert bomb.stat().st_size < 1_000_000
    code = (
        "import resource, sys\n"
        "from ffrt import Detector, ImageFileError\n"
        f"det = Detector({str(red_model)!r}, threads=1)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    det({str(bomb)!r})\n"
        "    print('decoded')\n"
        "except ImageFileError as e:\n"
        "    print('refused', e)\n"
        "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("refused") and "20000x20000" in lines[0]
    grew_kb = int(lines[-1].split()[1])
    assert grew_kb < 100_000  # a decoded 20000x20000 BGR frame alone is 1.2 GB


def test_the_limit_is_configurable_and_none_disables_it(red_model, tmp_path):
    path = tmp_path / "frame.png"
    path.write_bytes(cv2.imencode(".png", solid_bgr(40, 50, RED_BGR))[1].tobytes())
    small = Detector(red_model, max_pixels=1999)
    with pytest.raises(ImageFileError, match=r"50x40 pixels \(0\.0 MP\).*max_pixels=1999"):
        small(path)
    with pytest.raises(InvalidImageError, match="max_pixels=1999"):
        small(solid_bgr(40, 50, RED_BGR))
    assert Detector(red_model, max_pixels=2000)(path).score == pytest.approx(1.0)
    assert Detector(red_model, max_pixels=None)(path).score == pytest.approx(1.0)
    for bad in (0, -5, 1.5, "big", True):
        with pytest.raises(InvalidArgumentError, match="max_pixels"):
            Detector(red_model, max_pixels=bad)
    for bad in (0, -1, 2.5, None):
        with pytest.raises(InvalidArgumentError, match="min_side"):
            Detector(red_model, min_side=bad)


def test_large_arrays_are_refused_before_any_copy(det):
    # Issue 10: a 12000x12000 array was accepted, and its float32 map came back at full size.
    with pytest.raises(InvalidImageError, match=r"12000x12000 pixels \(144\.0 MP\).*max_pixels"):
        det(np.zeros((12000, 12000), np.uint8))


@pytest.mark.parametrize(
    "ext,params",
    [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []), (".tiff", []),
     (".tif", [cv2.IMWRITE_TIFF_COMPRESSION, 1]), (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
     (".ppm", []), (".pgm", []), (".pam", []), (".ras", [])],
    ids=lambda v: str(v),
)
def test_header_sizes_of_real_files(red_model, ext, params, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    if ext == ".pgm":
        image = image[:, :, 0]
    data = cv2.imencode(ext, image, params)[1].tobytes()
    assert image_size(data) == (37, 53)
    # And the Detector uses it: a limit one pixel below the image refuses the file unread.
    path = tmp_path / f"img{ext}"
    path.write_bytes(data)
    with pytest.raises(ImageFileError, match=r"53x37 pixels.*header"):
        Detector(red_model, max_pixels=37 * 53 - 1)(path)


def test_jpeg_with_a_large_frame_header_is_refused_from_the_header(det, tmp_path):
    data = bytearray(cv2.imencode(".jpg", solid_bgr(40, 50, RED_BGR))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageFileError, match=r"60000x60000 pixels.*header"):
        det(path)


def test_bmp_with_a_large_header_is_refused_from_the_header(det, tmp_path):
    data = bytearray(cv2.imencode(".bmp", solid_bgr(40, 50, RED_BGR))[1].tobytes())
    data[18:26] = struct.pack("<ii", 30000, -30000)  # top-down rows: negative height
    path = tmp_path / "huge.bmp"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageFileError, match=r"30000x30000 pixels.*header"):
        det(path)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5000), (5000, 1), (7, 100), (1, 1, 3)])
def test_too_small_images_are_refused(det, shape):
    # Issue 10: 1x1 and 1x5000 images were accepted and scored as anomalous.
    with pytest.raises(InvalidImageError, match=r"shorter side is below.*min_side=8"):
        det(np.full(shape, 200, np.uint8))


def test_too_small_files_are_refused_and_the_minimum_is_configurable(red_model, tmp_path):
    path = tmp_path / "strip.png"
    path.write_bytes(cv2.imencode(".png", solid_bgr(1, 5000, RED_BGR))[1].tobytes())
    with pytest.raises(ImageFileError, match=r"5000x1 pixels.*min_side=8.*header"):
        Detector(red_model)(path)
    assert Detector(red_model, min_side=1)(path).score == pytest.approx(1.0)
    assert Detector(red_model)(solid_bgr(8, 8, RED_BGR)).score == pytest.approx(1.0)  # at the minimum


def _call_with_deadline(det, path, seconds: float = 10.0):
    """det(path) in a thread; (finished, outcome). A reader stuck on a FIFO is released by
    opening the FIFO for writing, so a failing test does not hang the suite."""
    outcome: list = []

    def target():
        try:
            outcome.append(det(path))
        except Exception as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    finished = not t.is_alive()
    if not finished:
        with open(path, "wb"):
            pass
        t.join(10)
    return finished, (outcome[0] if outcome else None)


def test_a_fifo_is_refused_without_blocking(det, tmp_path):
    # Issue 10: a FIFO path hung the Detector forever.
    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)
    finished, outcome = _call_with_deadline(det, fifo)
    assert finished, "Detector blocked on a FIFO"
    assert isinstance(outcome, ImageFileError)
    assert "FIFO" in str(outcome) and "regular file" in str(outcome)


def test_devices_and_directories_are_refused(det, tmp_path):
    with pytest.raises(ImageFileError, match="device, not a regular file"):
        det("/dev/zero")
    with pytest.raises(ImageFileError, match="is a directory"):
        det(tmp_path)
