"""Data sources: the fixed ELPV split, MVTec-style folders, bad files, synthetic defects."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from ffcore import synthetic
from fftrain.data import DataError, elpv, load_batch, mvtec_folder, read_rgb, resolve


def test_elpv_mono_split_is_the_published_one():
    split = elpv("mono")
    counts = split.counts()
    assert counts["test_normal"] == 147 and counts["test_defective"] == 313
    assert counts["train"] + counts["val"] == 441
    assert counts["val"] == 44
    assert not {s.path for s in split.train} & {s.path for s in split.test}
    assert not {s.path for s in split.val} & {s.path for s in split.train}
    assert split.test[0].path.name == "cell0004.png"  # the first mono normal (index 0) is a test normal


def _fake_mvtec(root, elpv_split):
    """An MVTec-AD style folder made of real ELPV images (masks from synthetic defects)."""
    (root / "train" / "good").mkdir(parents=True)
    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "crack").mkdir(parents=True)
    (root / "ground_truth" / "crack").mkdir(parents=True)
    for s in elpv_split.train[:20]:
        shutil.copy(s.path, root / "train" / "good" / s.path.name)
    shutil.copy(elpv_split.val[0].path, root / "test" / "good" / "000.png")
    rng = np.random.default_rng(0)
    for i, s in enumerate(elpv_split.val[1:3]):
        img, mask = synthetic.add_defect(read_rgb(s.path), rng, "crack")
        cv2.imwrite(str(root / "test" / "crack" / f"{i:03d}.png"), img)
        if i == 0:  # the second defect has no mask file
            cv2.imwrite(str(root / "ground_truth" / "crack" / f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)


def test_mvtec_folder_layout(tmp_path, elpv_split):
    _fake_mvtec(tmp_path, elpv_split)
    split = mvtec_folder(tmp_path, val_every=5)
    assert len(split.train) == 16 and len(split.val) == 4
    assert [(s.label, s.defect_type) for s in split.test] == [(1, "crack"), (1, "crack"), (0, "good")]
    assert split.test[0].mask_path is not None and split.test[1].mask_path is None
    assert resolve(str(tmp_path), val_every=5).counts() == split.counts()


def test_gray_images_become_three_equal_channels(elpv_split):
    img = read_rgb(elpv_split.train[0].path)
    assert img.shape == (300, 300, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], img[..., 2])
    batch = load_batch(elpv_split.train[:2], 64)
    assert batch.shape == (2, 64, 64, 3) and batch.dtype == np.uint8


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_corrupt_or_empty_image_file(tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match="not a decodable image"):
        read_rgb(bad)


def test_bad_data_specs(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        resolve(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="train/good"):
        resolve(str(tmp_path))
    with pytest.raises(DataError, match="elpv:mono or elpv:poly"):
        resolve("elpv:thin-film")
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="found 0 images"):
        resolve(str(tmp_path))


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_synthetic_defect_changes_only_its_region(kind, elpv_split):
    img = load_batch(elpv_split.val[:1], 128)[0]
    out, mask = synthetic.add_defect(img, np.random.default_rng(3), kind)
    assert 0 < mask.sum() < mask.size * 0.2
    changed = np.abs(out.astype(int) - img.astype(int)).max(axis=2) > 0
    assert changed[mask].mean() > 0.5  # the masked pixels were actually altered
    # Outside a 3-pixel border around the mask nothing changes (anti-aliased edges only).
    near = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert not changed[~near].any()


def test_synthetic_batch_is_deterministic(real_images):
    a, ma = synthetic.defect_batch(real_images, seed=7)
    b, mb = synthetic.defect_batch(real_images, seed=7)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)


def test_auto_image_size_follows_the_parts_aspect_ratio(tmp_path, elpv_split):
    from fftrain.data import Sample, auto_image_size

    squares = elpv_split.train[:5]  # 300x300 cells
    assert auto_image_size(squares) == (256, 256)
    strips = []
    for i, s in enumerate(squares):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), cv2.imread(str(s.path))[:, 60:240])  # 300 high, 180 wide
        strips.append(Sample(path, 0))
    h, w = auto_image_size(strips)
    assert (h % 16, w % 16) == (0, 0) and abs(w / h - 0.6) < 0.05 and abs(h * w - 256 * 256) < 0.1 * 256 * 256
    assert (h, w) == (336, 192)


def test_images_much_larger_than_the_model_input_get_the_image_size_note(tmp_path, elpv_split):
    """Small defects on large images are averaged away by the resize (DeepPCB at 256x256): fftrain
    says so and names the lever; images near the input size get no note."""
    from fftrain.data import Sample, downscale_note

    cells = elpv_split.train[:5]  # 300x300: 1.4x the area of 256x256
    assert downscale_note(cells, (256, 256)) is None
    boards = []
    for i, s in enumerate(cells):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(s.path)), (640, 640), interpolation=cv2.INTER_CUBIC))
        boards.append(Sample(path, 0))
    note = downscale_note(boards, (256, 256))
    assert note is not None and "640x640" in note and "6.2x" in note
    assert "--image-size 640 640 --score-strides 4 8 16" in note  # the lever measured on DeepPCB
    assert downscale_note(boards, (336, 336)) is None  # 3.6x: under the note's 4x
    assert downscale_note(boards, (320, 320)) is not None  # exactly 4x


def _resized_copies(samples, folder, size_wh):
    from fftrain.data import Sample

    out = []
    for i, s in enumerate(samples):
        path = folder / f"{size_wh[0]}x{size_wh[1]}-{i}.png"
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(s.path)), size_wh, interpolation=cv2.INTER_CUBIC))
        out.append(Sample(path, 0))
    return out


def test_auto_image_size_grows_for_large_images_only_when_asked(tmp_path, elpv_split):
    """By default the area stays about 256x256 whatever the images' size. With growth 1.5 (the
    suite's recipe area-growth) images over 4x the default area get a quarter of their area, at
    most 1.5x the default's, sides rounded down to multiples of 16. Expected sizes worked out by
    hand in the comments."""
    from fftrain.data import auto_image_size

    cells = elpv_split.train[:3]  # 300x300: 1.4x the default area, no growth
    assert auto_image_size(cells) == auto_image_size(cells, growth=1.5) == (256, 256)
    # 640x640 boards: a quarter is 102400 px, over the cap 1.5 * 65536 = 98304; sqrt 313.5 -> 304.
    boards = _resized_copies(cells, tmp_path, (640, 640))
    assert auto_image_size(boards, growth=1.5) == (304, 304)
    assert auto_image_size(boards) == (256, 256)
    # 576x576: a quarter is 82944 px (between the default and the cap); sqrt 288 -> 288.
    assert auto_image_size(_resized_copies(cells, tmp_path, (576, 576)), growth=1.5) == (288, 288)
    # 500 wide x 1250 high, aspect 0.4: the cap 98304 -> sqrt(98304 / 0.4) = 495.7 -> 480 high,
    # sqrt(98304 * 0.4) = 198.3 -> 192 wide; without growth 400 x 160.
    long_parts = _resized_copies(cells, tmp_path, (500, 1250))
    assert auto_image_size(long_parts, growth=1.5) == (480, 192)
    assert auto_image_size(long_parts) == (400, 160)
    # Images just under 4x the area keep the default area.
    assert auto_image_size(_resized_copies(cells, tmp_path, (508, 508)), growth=1.5) == (256, 256)


def test_a_plain_folder_of_normal_images_resolves(tmp_path, elpv_split):
    # Issue 10: `ffexport --int8 --calib DIR` refused a plain folder of normal images (the
    # form --calib was specified with) unless it was an MVTec root; it resolves through here.
    for s in elpv_split.train[:12]:
        shutil.copy(s.path, tmp_path / s.path.name)
    (tmp_path / "readme.txt").write_text("not an image")
    split = resolve(str(tmp_path), val_every=5)
    names = sorted(s.path.name for s in elpv_split.train[:12])
    assert [s.path.name for s in split.val] == [names[4], names[9]]
    assert [s.path.name for s in split.train] == [n for i, n in enumerate(names) if i not in (4, 9)]
    assert split.test == [] and "plain folder" in split.notes[0]


@pytest.mark.parametrize("count,expected", [(4, (3, 1)), (9, (8, 1)), (10, (9, 1)), (20, (18, 2))])
def test_few_normals_still_hold_one_out(tmp_path, elpv_split, count, expected):
    good = tmp_path / "train" / "good"
    good.mkdir(parents=True)
    for s in elpv_split.train[:count]:
        shutil.copy(s.path, good / s.path.name)
    split = mvtec_folder(tmp_path)
    assert (len(split.train), len(split.val)) == expected
    assert any("only" in n for n in split.notes) == (count < 10)
