"""Hostile image files against the runtime's decoder (issue 23, row 2).

A few hundred bytes must never cost gigabytes: an image is decoded only after its header
gave its size and the size passed the Detector's limits. The corpus (tests/support/hostile)
is real OpenCV output in every format decoded here, with headers patched to declare huge
sizes, plus truncated and stray-byte variants of everything. Peak memory is read from a
child process's ru_maxrss: OpenCV allocates outside Python, where tracemalloc sees nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import hostile  # noqa: E402

from conftest import solid_bgr  # noqa: E402
from ffrt import Detector, ImageFileError  # noqa: E402
from ffcore.imageheader import image_size  # noqa: E402
from ffrt.preprocess import decode_image_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RED_BGR = (0, 0, 255)


def test_the_issue_files_are_refused_from_their_headers(red_model, tmp_path):
    det = Detector(red_model, threads=1)
    jpeg, gif = tmp_path / "stray.jpg", tmp_path / "tiny.gif"
    jpeg.write_bytes(hostile.stray_sof_jpeg(15000, 15000))
    gif.write_bytes(hostile.tiny_gif(15000, 15000))
    assert jpeg.stat().st_size < 400 and gif.stat().st_size < 40
    for path in (jpeg, gif):
        with pytest.raises(ImageFileError, match=r"15000x15000 pixels.*header; the file was not decoded"):
            det(path)
    assert det(solid_bgr(40, 50, RED_BGR)).score == pytest.approx(1.0)  # the next call works


def test_a_stray_byte_before_the_frame_header_does_not_hide_the_jpeg_size():
    # libjpeg skips bytes up to the next 0xFF between segments (with a warning); the header
    # reader must find the frame header the decoder will use.
    assert image_size(hostile.stray_sof_jpeg(123, 4567)) == (4567, 123)


def test_gif_and_jpeg2000_sizes_come_from_their_headers():
    seeds = hostile.seeds()
    assert image_size(seeds["gif"]) == hostile.SEED_SHAPE
    assert image_size(seeds["jp2"]) == hostile.SEED_SHAPE
    assert image_size(hostile.declaring("jp2", seeds["jp2"], 700, 300)) == (300, 700)
    # The raw codestream (no JP2 boxes): SOC, SIZ, and the image area is Xsiz - XOsiz.
    siz = b"\xff\x4f\xff\x51\x00\x29\x00\x00" + (1000).to_bytes(4, "big") + (800).to_bytes(4, "big") + \
        (10).to_bytes(4, "big") + (20).to_bytes(4, "big")
    assert image_size(siz + b"\x00" * 32) == (780, 990)


def test_an_image_whose_size_the_header_does_not_give_is_refused_undecoded():
    png = hostile.seeds()["png"]
    garbled = png[:12] + b"IHDX" + png[16:]
    with pytest.raises(ImageFileError, match=r"cannot be decoded as an image: its pixel size cannot be read from the file header.*Re-save"):
        decode_image_bytes(garbled)
    with pytest.raises(ImageFileError, match=r"unrecognised format"):
        decode_image_bytes(b"\x00\x01\x02 not an image at all")


def test_every_seed_format_still_decodes_at_its_size():
    for name, data in hostile.seeds().items():
        assert decode_image_bytes(data).shape[:2] == hostile.SEED_SHAPE, name


_FUZZ_CHILD = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import hostile
from ffrt import ImageFileError
from ffcore.imageheader import image_size
from ffrt.preprocess import ImageLimits, decode_image_bytes

limits = ImageLimits(max_pixels=1_000_000)
files = {}
for name, data in hostile.seeds().items():
    files[name] = data
    big = hostile.declaring(name, data, 6000, 6000)
    if big is not None:
        files["declaring-" + name] = big
files["stray-sof"] = hostile.stray_sof_jpeg(6000, 6000)
files["tiny-gif"] = hostile.tiny_gif(6000, 6000)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decoded = refused = 0
worst = (0, "")
mismatch = []
for fname, data in files.items():
    for mname, m in [("whole", data), *hostile.mutants(data)]:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            img = decode_image_bytes(m, limits)
            decoded += 1
            if image_size(m) not in (img.shape[:2], img.shape[1::-1]):
                mismatch.append(f"{fname}/{mname}: header {image_size(m)}, decoded {img.shape[:2]}")
        except ImageFileError:
            refused += 1
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        if grew > worst[0]:
            worst = (grew, f"{fname}/{mname}")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"decoded": decoded, "refused": refused, "peak_kb": peak, "worst": worst, "mismatch": mismatch[:10]}))
"""


def test_fuzzed_headers_never_decode_past_the_limit(tmp_path):
    # Every file declaring 6000x6000 (a 108 MB decode) and every truncated or stray-byte
    # variant of them and of the real seeds goes through decode_image_bytes with a 1 MP
    # limit. Anything decoded before the size was known would raise the child's peak RSS
    # by >= 100 MB; what may be decoded (at most 1 MP, 3 MB) stays far below the bound.
    out = subprocess.run([sys.executable, "-c", _FUZZ_CHILD, str(ROOT / "tests" / "support")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["peak_kb"] < 40_000, result
    assert result["mismatch"] == [], result
    # The fuzz must have exercised both paths: intact files decode, damaged ones are refused.
    assert result["decoded"] > 100 and result["refused"] > 1000, result
