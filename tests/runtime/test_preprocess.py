"""ffrt.preprocess: accepted inputs become the exact bytes the graph expects."""

import cv2
import numpy as np
import pytest

from ffrt.errors import ImageFileError, InvalidArgumentError, InvalidImageError
from ffcore.geometry import interpolation_flag
from ffrt.preprocess import ImageLimits, prepare_batch, read_image_file, to_model_rgb, to_uint8_image

from conftest import make_meta

SPEC = make_meta(height=24, width=40).input


def test_bgr_is_converted_to_rgb_and_resized_with_inter_area():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    out = prepare_batch([img], SPEC)
    expected = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (40, 24), interpolation=cv2.INTER_AREA)
    assert out.batch.shape == (1, 24, 40, 3) and out.batch.dtype == np.uint8
    assert out.batch.flags.c_contiguous
    np.testing.assert_array_equal(out.batch[0], expected)  # the trainer's order: convert, then resize
    assert out.original_sizes == ((70, 90),)


def test_rgb_order_is_passed_through():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_batch([img], SPEC, "RGB").batch[0], img)
    np.testing.assert_array_equal(prepare_batch([img], SPEC, "bgr").batch[0], img[:, :, ::-1])


def test_linear_interpolation_when_the_model_says_so():
    spec = make_meta(height=24, width=40, interpolation="linear").input
    assert interpolation_flag("linear") == cv2.INTER_LINEAR and interpolation_flag("area") == cv2.INTER_AREA
    img = np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    expected = cv2.resize(img, (40, 24), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    np.testing.assert_array_equal(prepare_batch([img], spec).batch[0], expected)


@pytest.mark.parametrize("shape", [(50, 30), (50, 30, 1)])
def test_gray_is_replicated_to_three_channels(shape):
    img = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    out = prepare_batch([img], SPEC).batch[0]
    small = cv2.resize(img.reshape(50, 30), (40, 24), interpolation=cv2.INTER_AREA)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], small)


def test_float_images_are_scaled_and_rounded():
    img = np.array([[0.0, 0.5, 0.999, 1.0, 0.002]], dtype=np.float32)
    one_row = ImageLimits(min_side=1)  # a 1x5 image is below the Detector's default minimum
    u8, order = to_uint8_image(img, limits=one_row)
    assert order == "GRAY" and u8.dtype == np.uint8
    np.testing.assert_array_equal(u8, [[0, 128, 255, 255, 1]])  # rounded, not truncated
    u8_64, _ = to_uint8_image(img.astype(np.float64), limits=one_row)
    np.testing.assert_array_equal(u8_64, u8)


def test_non_contiguous_views_work():
    img = np.random.default_rng(4).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    view = img[:, :, ::-1]  # negative stride: cv2 refuses it unless copied
    np.testing.assert_array_equal(prepare_batch([view], SPEC, "RGB").batch[0], prepare_batch([img], SPEC, "BGR").batch[0])


def test_files_decode_as_bgr_including_non_ascii_paths(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :, 2] = 200  # red in BGR
    path = tmp_path / "prüfteil_画像.png"
    ok, data = cv2.imencode(".png", img)
    path.write_bytes(data.tobytes())
    np.testing.assert_array_equal(read_image_file(path), img)
    # color_order applies to arrays only; files are BGR whatever it says.
    batch = prepare_batch([str(path)], SPEC, "RGB").batch[0]
    assert (batch[:, :, 0] == 200).all() and (batch[:, :, 2] == 0).all()


BAD_INPUTS = [
    (None, InvalidImageError, "None"),
    ([[1, 2], [3, 4]], InvalidImageError, "list"),
    (b"\x89PNG", InvalidImageError, "cv2.imdecode"),
    (np.zeros((0, 10, 3), np.uint8), InvalidImageError, "empty"),
    (np.zeros((10, 0), np.uint8), InvalidImageError, "empty"),
    (np.zeros((10, 10, 4), np.uint8), InvalidImageError, "COLOR_BGRA2BGR"),
    (np.zeros((10, 10, 2), np.uint8), InvalidImageError, "2 channels"),
    (np.zeros((3, 10, 10), np.uint8), InvalidImageError, "np.transpose"),
    (np.zeros(10, np.uint8), InvalidImageError, "1 dimensions"),
    (np.zeros((1, 10, 10, 3), np.uint8), InvalidImageError, "predict_batch"),
    (np.zeros((10, 10), np.uint16), InvalidImageError, ">> 8"),
    (np.zeros((10, 10), np.uint16), InvalidImageError, "cv2.normalize"),
    (np.zeros((10, 10), np.int32), InvalidImageError, "int32"),
    (np.zeros((10, 10), bool), InvalidImageError, "bool"),
    (np.zeros((10, 10), np.float16), InvalidImageError, "float16"),
    (np.full((10, 10), np.nan, np.float32), InvalidImageError, "NaN"),
    (np.full((10, 10), np.inf, np.float64), InvalidImageError, "nan_to_num"),
    (np.full((10, 10), 255.0, np.float32), InvalidImageError, "astype(np.uint8)"),
    (np.full((10, 10), -0.1, np.float32), InvalidImageError, "[0, 1]"),
]


@pytest.mark.parametrize("image,error,fragment", BAD_INPUTS, ids=[f"{i}-{f}" for i, (_, _, f) in enumerate(BAD_INPUTS)])
def test_bad_inputs_are_refused_with_an_actionable_message(image, error, fragment):
    with pytest.raises(error) as exc:
        prepare_batch([image], SPEC)
    assert fragment in str(exc.value)


def test_float_range_message_names_the_span():
    img = np.linspace(0, 255, 16, dtype=np.float32).reshape(4, 4)
    with pytest.raises(InvalidImageError, match=r"spans \[0, 255\]"):
        prepare_batch([img], SPEC)


def test_file_errors(tmp_path):
    with pytest.raises(ImageFileError, match="no such image file"):
        prepare_batch([tmp_path / "missing.png"], SPEC)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageFileError, match="empty"):
        prepare_batch([str(tmp_path / "empty.png")], SPEC)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg" * 10)
    with pytest.raises(ImageFileError, match="cannot be decoded"):
        prepare_batch([tmp_path / "corrupt.jpg"], SPEC)
    with pytest.raises(ImageFileError, match="directory"):
        prepare_batch([tmp_path], SPEC)
    # ImageFileError is also an InvalidImageError and a FileNotFoundError.
    assert issubclass(ImageFileError, InvalidImageError) and issubclass(ImageFileError, FileNotFoundError)


def test_errors_in_a_batch_name_the_position():
    good = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(InvalidImageError, match="image 2 of 3: image is None"):
        prepare_batch([good, good, None], SPEC)


def test_bad_color_order():
    with pytest.raises(InvalidArgumentError, match="'BGR'"):
        prepare_batch([np.zeros((4, 4, 3), np.uint8)], SPEC, "BRG")


def test_to_model_rgb_resize_then_convert_equals_convert_then_resize():
    # Why preprocess may resize first: cv2.resize treats channels independently.
    img = np.random.default_rng(5).integers(0, 256, (123, 77, 3), dtype=np.uint8)
    ours = to_model_rgb(img, "BGR", SPEC)
    trainer = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (40, 24), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(ours, trainer)
