"""``ffrt run``'s decoding (ffrt.line.decode): JPEG frames decoded at a reduced resolution keep
the whole frame's geometry and their verdicts, and the decoding pool keeps each source's order.

Real files throughout: JPEG frames written with OpenCV from real ELPV cells (upscaled to
camera sizes) and from drawn pictures whose right answer is known (the red-channel model of
conftest.py: map = red / 255), scored through the real ONNX Runtime.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import solid_bgr

from ffrt import Detector
from ffrt.cli import main
from ffrt.errors import InvalidImageError
from ffrt.line.decode import DecodeSettings, FrameDecoder, reduction
from ffrt.line.sources import FrameReader, SourceSpec
from ffrt.preprocess import ReducedFrame

#: Largest score change reduced decoding may cause on the tiny model's real frames, as a share
#: of its image threshold; a frame whose score is closer than this to the threshold may change
#: its verdict (benchmarks/README.md, "Line throughput", has the price on the demo model).
SCORE_TOLERANCE = 0.15


def _jpeg(path: Path, image: np.ndarray, quality: int = 95) -> Path:
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path


@pytest.mark.parametrize("frame, model, factor", [
    ((1224, 1632), (256, 256), 2),  # 4.8x and 6.4x: 1/2 leaves 612x816, 2.4x the model; 1/4 only 1.2x
    ((1224, 1632), (240, 272), 2),
    ((1944, 2592), (256, 256), 2),  # 5 MP: 1/4 would leave 486 rows, under 2x 256
    ((2048, 2048), (256, 256), 4),
    ((4096, 4096), (256, 256), 8),
    ((4095, 8192), (256, 256), 4),  # 15.99x on one side is not 16x on both
    ((1024, 1024), (256, 256), 2),
    ((1023, 1632), (256, 256), 1),  # under 4x on one side: decoded whole
    ((512, 512), (256, 256), 1),
    ((256, 256), (256, 256), 1),
])
def test_reduction_by_hand(frame, model, factor):
    assert reduction(frame, model) == factor


def test_a_reduced_frame_is_scored_in_the_whole_frames_coordinates(red_model, tmp_path):
    """A 256x320 JPEG (8x and 10x the 32x32 red model) with a red block: decoded at 1/4 (1/8
    would leave less than twice the model), its map, mask and region come back at 256x320,
    where the block is."""
    frame = solid_bgr(256, 320, (255, 0, 0))  # blue: map 0
    frame[64:192, 160:288] = (0, 0, 255)  # red block: map 1
    path = _jpeg(tmp_path / "f.jpg", frame)
    with Detector(red_model) as det:
        reduced = FrameDecoder(det.limits, det.meta.input, reduced=True)(path)
        assert isinstance(reduced, ReducedFrame) and reduced.scale == 4
        assert reduced.image.shape == (64, 80, 3) and reduced.frame_size == (256, 320)
        whole = FrameDecoder(det.limits, det.meta.input, reduced=False)(path)
        assert isinstance(whole, np.ndarray) and whole.shape == (256, 320, 3)
        a, b = det(whole), det(reduced)
    assert a.anomaly_map.shape == b.anomaly_map.shape == b.mask.shape == (256, 320)
    assert a.is_anomalous and b.is_anomalous and b.score == pytest.approx(a.score, abs=0.02)
    (region,) = b.regions
    x, y, w, h = region.bbox
    # The block's edges within one model pixel (10 frame pixels across, 8 down).
    assert abs(x - 160) <= 10 and abs(y - 64) <= 8 and abs(x + w - 288) <= 10 and abs(y + h - 192) <= 8
    assert b.mask[64 + 8 : 192 - 8, 160 + 10 : 288 - 10].all() and not b.mask[:48].any()


def test_only_large_jpeg_frames_are_reduced(red_model, tmp_path):
    frame = solid_bgr(256, 320, (0, 0, 255))
    png = tmp_path / "f.png"
    cv2.imwrite(str(png), frame)
    small = _jpeg(tmp_path / "small.jpg", frame[:48, :48])  # 1.5x the model: nothing to gain
    with Detector(red_model) as det:
        decode = FrameDecoder(det.limits, det.meta.input, reduced=True)
        assert isinstance(decode(png), np.ndarray) and decode(png).shape == (256, 320, 3)  # PNG: no scaled decoder
        assert isinstance(decode(small), np.ndarray) and decode(small).shape == (48, 48, 3)
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"\xff\xd8" + bytes(range(256)) * 4)  # a JPEG start, then no frame header
        with pytest.raises(InvalidImageError, match="broken.jpg"):
            decode(broken)


@pytest.fixture(scope="module")
def camera_frames(elpv_split, tmp_path_factory) -> list[Path]:
    """Real ELPV cells (validation normals and test defects) as 2-megapixel JPEG camera frames."""
    out = tmp_path_factory.mktemp("camera")
    cells = elpv_split.val[:8] + [s for s in elpv_split.test if s.label == 1][:8]
    paths = []
    for i, s in enumerate(cells):
        big = cv2.resize(cv2.imread(str(s.path), cv2.IMREAD_COLOR), (1632, 1224), interpolation=cv2.INTER_CUBIC)
        paths.append(_jpeg(out / f"{i:03d}.jpg", big, quality=90))
    return paths


def test_reduced_decoding_keeps_the_verdicts_of_real_frames_within_the_tolerance(tiny_onnx, camera_frames):
    with Detector(tiny_onnx, threads=1) as det:
        whole = FrameDecoder(det.limits, det.meta.input, reduced=False)
        reduced = FrameDecoder(det.limits, det.meta.input, reduced=True)
        a = np.array([r.score for r in det.predict_batch([whole(p) for p in camera_frames])])
        b_results = det.predict_batch([reduced(p) for p in camera_frames])
        threshold = det.thresholds.image
    b = np.array([r.score for r in b_results])
    assert all(r.anomaly_map.shape == (1224, 1632) for r in b_results)
    assert np.abs(a - b).max() <= SCORE_TOLERANCE * threshold
    clear = np.abs(a - threshold) > SCORE_TOLERANCE * threshold
    assert clear.sum() >= len(a) // 2  # most frames are clear of the threshold, so the check has teeth
    assert ((a > threshold) == (b > threshold))[clear].all()


def test_the_decoding_pool_keeps_each_sources_order(tiny_onnx, camera_frames, tmp_path, capsys):
    """Two sources whose files alternate between a large and a small JPEG (the small ones decode
    first on the pool): every source's frames are written in order, with the scores of the same
    files decoded one by one; the frames decoded at a reduced size say so. Reduced decoding is the
    default."""
    sources = []
    for k in range(2):
        folder = tmp_path / f"cam{k}"
        folder.mkdir()
        for i, p in enumerate(camera_frames[k * 8 : k * 8 + 8]):
            image = cv2.imread(str(p))
            if i % 2:
                image = cv2.resize(image, (300, 300), interpolation=cv2.INTER_AREA)
            _jpeg(folder / f"{i:03d}.jpg", image)
        sources.append(folder)
    out = tmp_path / "out"
    assert main(["run", str(tiny_onnx), *map(str, sources), "--out", str(out), "--threads", "1",
                 "--decode-threads", "3"]) == 0
    capsys.readouterr()
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    with Detector(tiny_onnx, threads=1) as det:
        decode = FrameDecoder(det.limits, det.meta.input, reduced=True)
        for k, folder in enumerate(sources):
            mine = [r for r in lines if r["source"] == folder.name]
            files = sorted(folder.glob("*.jpg"))
            assert [r["frame"] for r in mine] == list(range(8))
            assert [Path(r["file"]).name for r in mine] == [f.name for f in files]
            for r, f in zip(mine, files):
                assert r["status"] == "scored" and r["score"] == pytest.approx(det(decode(f)).score, rel=1e-5)
                big = int(Path(f).stem) % 2 == 0
                assert r.get("decode_scale") == (8 if big else 2)  # 1224x1632 and 300x300 against 64x64
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decode"] == {"reduced_jpeg": True, "threads": 3}


def test_frame_reader_on_a_pool_yields_in_order_and_reports_bad_files(tmp_path):
    """Decodes that finish out of order (later files faster) come out in the source's order; an
    unreadable file is an error frame in its place; at most ``ahead`` files are in flight."""
    files = [tmp_path / f"{i}.x" for i in range(8)]
    for f in files:
        f.write_text("")
    busy, most = [0], [0]
    lock = threading.Lock()

    def read(path: Path):
        i = int(path.stem)
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.01 * (8 - i))
        with lock:
            busy[0] -= 1
        if i == 5:
            raise InvalidImageError(f"{path}: cannot be decoded")
        return np.full((4, 4, 3), i, np.uint8)

    spec = SourceSpec("cam", "images", str(tmp_path), files=tuple(files))
    with ThreadPoolExecutor(4) as pool:
        frames = list(FrameReader(spec, read, pool=pool, ahead=3))
    assert [f.index for f in frames] == list(range(8))
    assert [f.error is not None for f in frames] == [i == 5 for i in range(8)]
    assert all(int(f.image[0, 0, 0]) == f.index for f in frames if f.error is None)
    assert most[0] <= 3


def test_decode_settings_are_checked(tiny_onnx, tmp_path, capsys):
    assert DecodeSettings(threads=2).frames_ahead == 4
    with pytest.raises(Exception, match="decode threads"):
        DecodeSettings(threads=-1)
    folder = tmp_path / "one"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), solid_bgr(64, 64, (0, 0, 0)))
    code = main(["run", str(tiny_onnx), str(folder), "--out", str(tmp_path / "out"), "--decode-threads", "-1"])
    err = capsys.readouterr().err
    assert code != 0 and "--decode-threads must be 0 or more" in err


def test_no_reduced_decode_decodes_every_frame_whole(tiny_onnx, camera_frames, tmp_path, capsys):
    folder = tmp_path / "cam"
    folder.mkdir()
    for p in camera_frames[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    assert main(["run", str(tiny_onnx), str(folder), "--out", str(out), "--threads", "1", "--no-reduced-decode"]) == 0
    capsys.readouterr()
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all("decode_scale" not in r for r in lines)
    assert json.loads((out / "summary.json").read_text())["decode"]["reduced_jpeg"] is False


def test_a_luma_model_reads_a_jpeg_frames_y_plane_and_an_rgb_model_its_colours(tiny_onnx, red_model, camera_frames,
                                                                              tmp_path):
    """The luma model (trained on grey ELPV cells) gets the JPEG's own Y plane, whole or reduced:
    the luminance the model computes from the colour decode, within the colour conversion's
    rounding, and the same score within a hundredth of the threshold; a PNG, and any file for
    an RGB model, is decoded in colour."""
    path = camera_frames[8]  # a defective cell
    with Detector(tiny_onnx, threads=1) as det:
        assert det.meta.input.color == "luma"
        whole, reduced = (FrameDecoder(det.limits, det.meta.input, r) for r in (False, True))
        y, small = whole(path), reduced(path)
        assert y.shape == (1224, 1632) and small.image.ndim == 2 and small.scale == 8
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR).astype(np.float64)
        luma = 0.299 * bgr[..., 2] + 0.587 * bgr[..., 1] + 0.114 * bgr[..., 0]
        assert np.abs(y - luma).max() <= 1.5
        assert det(y).score == pytest.approx(det(path).score, abs=0.01 * det.thresholds.image)
        png = tmp_path / "cell.png"
        cv2.imwrite(str(png), cv2.imread(str(path)))
        assert whole(png).shape == (1224, 1632, 3)
    with Detector(red_model) as det:
        assert det.meta.input.color != "luma"
        frame = solid_bgr(256, 320, (0, 0, 255))
        assert FrameDecoder(det.limits, det.meta.input, False)(_jpeg(tmp_path / "red.jpg", frame)).shape == (256, 320, 3)
