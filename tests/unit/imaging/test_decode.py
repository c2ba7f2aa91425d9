"""Decoding: every supported format gives the right pixels; every bad input gives the right status, never raises."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from froq_ray import status as st
from froq_ray.imaging.decode import decode_batch, decode_image, sniff_format
from tests.data_factory import (
    BAD_INPUT_STATUS,
    bad_inputs,
    encode,
    encode_palette,
    encode_png_rgb16,
    make_face_like_image,
    oriented,
    png_header_only,
    sample_jpeg,
    with_exif_orientation,
)

FACE = make_face_like_image(seed=7)


def decoded_ok(data: bytes, size: int = 112) -> np.ndarray:
    result = decode_image(data, size)
    assert result.status == st.OK, result.error
    assert result.error is None
    assert result.pixels is not None and result.pixels.dtype == np.uint8
    assert result.pixels.shape == (size, size, 3)
    return result.pixels


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "fmt,kwargs", [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})], ids=str
)
def test_lossless_formats_round_trip_exactly(fmt: str, kwargs: dict) -> None:
    np.testing.assert_array_equal(decoded_ok(encode(FACE, fmt, **kwargs)), FACE)


def test_jpeg_close_to_source_and_identical_to_a_plain_full_decode() -> None:
    data = encode(FACE, "JPEG", quality=95)
    pixels = decoded_ok(data)
    assert np.abs(pixels.astype(int) - FACE).mean() < 3.0
    with Image.open(io.BytesIO(data)) as reference:
        np.testing.assert_array_equal(pixels, np.asarray(reference.convert("RGB")))


def test_lossy_webp_close_to_source() -> None:
    pixels = decoded_ok(encode(FACE, "WEBP", quality=90))
    assert np.abs(pixels.astype(int) - FACE).mean() < 4.0


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = FACE[..., 1].copy()
    pixels = decoded_ok(encode(gray, "PNG"))
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], gray)


def test_bilevel_image_is_black_and_white() -> None:
    bits = make_face_like_image(seed=3)[..., 0] > 100
    pixels = decoded_ok(encode(bits, "PNG"))
    np.testing.assert_array_equal(pixels[..., 0], np.where(bits, 255, 0))
    assert Image.open(io.BytesIO(encode(bits, "PNG"))).mode == "1"


def test_palette_image_is_looked_up_in_its_palette() -> None:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    indices = rng.integers(0, 16, (112, 112), dtype=np.uint8)
    np.testing.assert_array_equal(decoded_ok(encode_palette(indices, palette)), palette[indices])


def test_palette_transparent_index_is_black() -> None:
    rng = np.random.default_rng(1)
    palette = rng.integers(1, 256, (8, 3), dtype=np.uint8)
    indices = rng.integers(0, 8, (112, 112), dtype=np.uint8)
    expected = palette[indices]
    expected[indices == 5] = 0
    np.testing.assert_array_equal(decoded_ok(encode_palette(indices, palette, transparent_index=5)), expected)


def test_rgba_is_composited_on_black() -> None:
    rng = np.random.default_rng(2)
    alpha = rng.integers(0, 256, (112, 112, 1), dtype=np.uint8)
    rgba = np.concatenate([FACE, alpha], axis=2)
    expected = np.round(FACE.astype(np.float64) * alpha / 255.0).astype(np.uint8)
    np.testing.assert_array_equal(decoded_ok(encode(rgba, "PNG")), expected)


def test_gray_alpha_is_composited_on_black() -> None:
    gray = FACE[..., 0]
    alpha = np.tile(np.linspace(0, 255, 112).astype(np.uint8), (112, 1))
    expected = np.round(gray.astype(np.float64) * alpha / 255.0).astype(np.uint8)
    pixels = decoded_ok(encode(np.stack([gray, alpha], axis=2), "PNG"))
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """R = (255 - C)(255 - K)/255, likewise G from M and B from Y (PIL's naive CMYK conversion)."""
    c = cmyk.astype(np.float64)
    return np.round((255 - c[..., :3]) * (255 - c[..., 3:4]) / 255.0)


def test_cmyk_tiff_converts_to_rgb() -> None:
    cmyk = np.random.default_rng(4).integers(0, 256, (112, 112, 4), dtype=np.uint8)
    pixels = decoded_ok(encode(cmyk, "TIFF", mode="CMYK"))
    assert np.abs(pixels.astype(int) - cmyk_to_rgb(cmyk)).max() <= 1


def test_cmyk_jpeg_converts_to_rgb() -> None:
    rgb = FACE.astype(np.float64)
    k = 255 - rgb.max(axis=2, keepdims=True)  # an exact CMYK decomposition of FACE
    cmy = np.where(k < 255, 255 * (255 - rgb - k) / np.maximum(255 - k, 1), 0)
    cmyk = np.clip(np.round(np.concatenate([cmy, k], axis=2)), 0, 255).astype(np.uint8)
    pixels = decoded_ok(encode(cmyk, "JPEG", mode="CMYK", quality=98))
    assert np.abs(pixels.astype(int) - FACE).mean() < 3.0


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    values = np.random.default_rng(5).integers(0, 65536, (112, 112)).astype(np.uint16)
    values[0, :5] = [0, 128, 129, 65406, 65535]  # /257 = 0, 0.498, 0.502, 254.498, 255
    pixels = decoded_ok(encode(values, "PNG"))
    expected = np.round(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    np.testing.assert_array_equal(pixels[..., 0], expected)
    np.testing.assert_array_equal(pixels[0, :5, 0], [0, 0, 1, 254, 255])
    assert pixels.max() == 255 and np.unique(pixels).size > 200  # full range used, not clipped to 255


def test_16_bit_rgb_png_keeps_the_high_byte() -> None:
    values = np.random.default_rng(6).integers(0, 65536, (112, 112, 3)).astype(np.uint16)
    pixels = decoded_ok(encode_png_rgb16(values))
    np.testing.assert_array_equal(pixels, (values >> 8).astype(np.uint8))
    assert np.abs(pixels - values.astype(np.float64) / 257.0).max() <= 1.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    stored = make_face_like_image(seed=8, size=(112, 112))
    pixels = decoded_ok(with_exif_orientation(stored, orientation, "PNG"))
    np.testing.assert_array_equal(pixels, oriented(stored, orientation))


def test_exif_rotated_non_square_jpeg_reports_displayed_size() -> None:
    stored = make_face_like_image(seed=9, size=(112, 160))  # 112 high, 160 wide as stored
    result = decode_image(with_exif_orientation(stored, 6, "JPEG", quality=95), 112)
    assert result.status == st.OK
    assert (result.width, result.height) == (112, 160)
    displayed = oriented(stored, 6)  # 160 high, 112 wide
    expected = np.asarray(Image.fromarray(displayed).resize((112, 112), Image.Resampling.BICUBIC))
    assert np.abs(result.pixels.astype(int) - expected).mean() < 3.0


# ---------------------------------------------------------------- geometry


def test_non_square_input_is_stretched_not_cropped() -> None:
    left_right = np.zeros((100, 300, 3), dtype=np.uint8)
    left_right[:, :150] = (200, 10, 10)
    left_right[:, 150:] = (10, 10, 200)
    result = decode_image(encode(left_right, "PNG"), 112)
    pixels = result.pixels.astype(int)
    assert (result.width, result.height) == (300, 100)
    # halves stay halves: column 0..55 red, 56..111 blue (away from the seam)
    np.testing.assert_array_equal(pixels[:, :50], np.broadcast_to([200, 10, 10], (112, 50, 3)))
    np.testing.assert_array_equal(pixels[:, 62:], np.broadcast_to([10, 10, 200], (112, 50, 3)))


def test_downscale_by_two_is_close_to_a_box_average() -> None:
    big = make_face_like_image(seed=10, size=224)
    expected = big.reshape(112, 2, 112, 2, 3).astype(np.float64).mean(axis=(1, 3))
    pixels = decoded_ok(encode(big, "PNG"))
    assert np.abs(pixels - expected).mean() < 4.0


def test_large_jpeg_is_decoded_small_and_correctly() -> None:
    big = make_face_like_image(seed=11, size=896)
    data = encode(big, "JPEG", quality=95)
    result = decode_image(data, 112)
    assert result.status == st.OK and (result.width, result.height) == (896, 896)
    expected = big.reshape(112, 8, 112, 8, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(result.pixels - expected).mean() < 4.0


def test_other_output_size() -> None:
    pixels = decoded_ok(encode(FACE, "PNG"), size=64)
    assert pixels.shape == (64, 64, 3)


def test_constant_image_stays_constant_after_resize() -> None:
    flat = np.full((57, 203, 3), (30, 140, 220), dtype=np.uint8)
    np.testing.assert_array_equal(
        decoded_ok(encode(flat, "PNG")), np.broadcast_to([30, 140, 220], (112, 112, 3))
    )


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name", sorted(BAD_INPUT_STATUS))
def test_bad_input_gets_its_status_and_a_message(name: str) -> None:
    result = decode_image(bad_inputs()[name])
    assert result.status == BAD_INPUT_STATUS[name]
    assert isinstance(result.error, str) and result.error.strip()
    assert result.pixels is None and (result.width, result.height) == (0, 0)


def test_bad_inputs_table_is_complete() -> None:
    assert set(bad_inputs()) == set(BAD_INPUT_STATUS)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9, 0.97])
def test_truncated_jpeg_is_never_silently_accepted(fraction: float) -> None:
    data = sample_jpeg(seed=12)
    result = decode_image(data[: int(len(data) * fraction)])
    assert result.status == st.CORRUPT and result.error
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_non_bytes_input_is_not_an_image() -> None:
    result = decode_image("a string")  # type: ignore[arg-type]  # a wrong type on purpose
    assert result.status == st.NOT_AN_IMAGE and "str" in result.error


def test_none_input_is_a_read_error() -> None:
    result = decode_image(None)
    assert result.status == st.READ_ERROR and result.error


def test_bytearray_and_memoryview_inputs_decode() -> None:
    data = encode(FACE, "PNG")
    np.testing.assert_array_equal(decoded_ok(bytearray(data)), FACE)
    np.testing.assert_array_equal(decoded_ok(memoryview(data)), FACE)


def test_pixel_limit_rejects_large_images_with_a_message() -> None:
    result = decode_image(encode(FACE, "PNG"), max_pixels=100 * 100)
    assert result.status == st.CORRUPT
    assert "12544 pixels" in result.error and "max_pixels=10000" in result.error


@pytest.mark.parametrize("side", [10_000, 30_000])  # between PIL's warning and error limits, and above both
def test_bomb_header_is_corrupt_even_when_warnings_are_errors(side: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = decode_image(png_header_only(side, side))
    assert result.status == st.CORRUPT and str(side * side) in result.error


def test_decode_does_not_change_warning_filters() -> None:
    before = list(warnings.filters)
    decode_image(png_header_only(10_000, 10_000))
    decode_batch([sample_jpeg(), b""])
    assert warnings.filters == before


def test_sniff_format() -> None:
    assert sniff_format(sample_jpeg()[:16]) == "JPEG"
    assert sniff_format(encode(FACE, "PNG")[:16]) == "PNG"
    assert sniff_format(encode(FACE, "WEBP")[:16]) == "WEBP"
    assert sniff_format(encode(FACE, "BMP")[:16]) == "BMP"
    assert sniff_format(encode(FACE, "TIFF")[:16]) == "TIFF"
    assert sniff_format(b"BMW is a car maker") is None
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVE") is None


# ---------------------------------------------------------------- batches


def test_batch_keeps_order_and_counts_with_bad_items_in_the_middle() -> None:
    images = [make_face_like_image(seed=s) for s in range(3)]
    bad = bad_inputs()
    blobs = [
        encode(images[0], "PNG"),
        bad["jpeg_truncated_half"],
        None,
        b"",
        encode(images[1], "PNG"),
        bad["text"],
        None,
        encode(images[2][:56], "PNG"),  # 112 wide x 56 high
    ]
    prior_statuses = [None, None, st.READ_ERROR, None, None, None, st.READ_ERROR, None]
    prior_errors = [None, None, "FileNotFoundError: x.jpg", None, None, None, None, None]
    batch = decode_batch(blobs, 112, prior_statuses=prior_statuses, prior_errors=prior_errors)

    assert len(batch) == 8 and batch.pixels.shape == (8, 112, 112, 3) and batch.pixels.dtype == np.uint8
    assert batch.statuses == [
        st.OK,
        st.CORRUPT,
        st.READ_ERROR,
        st.EMPTY,
        st.OK,
        st.NOT_AN_IMAGE,
        st.READ_ERROR,
        st.OK,
    ]
    assert batch.errors[2] == "FileNotFoundError: x.jpg"  # caller's message kept
    assert batch.errors[6]  # a default message when the caller gave none
    assert [e is None for e in batch.errors] == [s == st.OK for s in batch.statuses]
    np.testing.assert_array_equal(batch.ok_mask, [s == st.OK for s in batch.statuses])
    np.testing.assert_array_equal(batch.pixels[0], images[0])
    np.testing.assert_array_equal(batch.pixels[4], images[1])
    np.testing.assert_array_equal(batch.pixels[7], decode_image(blobs[7]).pixels)
    assert not batch.pixels[[1, 2, 3, 5, 6]].any()
    assert batch.widths.dtype == np.int32 and batch.heights.dtype == np.int32
    np.testing.assert_array_equal(batch.widths, [112, 0, 0, 0, 112, 0, 0, 112])
    np.testing.assert_array_equal(batch.heights, [112, 0, 0, 0, 112, 0, 0, 56])


def test_batch_of_every_bad_input_never_raises() -> None:
    bad = bad_inputs()
    batch = decode_batch(list(bad.values()))
    assert batch.statuses == [BAD_INPUT_STATUS[name] for name in bad]
    assert all(batch.errors) and not batch.pixels.any()


def test_empty_batch() -> None:
    batch = decode_batch([], 112)
    assert len(batch) == 0 and batch.pixels.shape == (0, 112, 112, 3)


def test_real_lfw_crops_decode(lfw_dev_dir) -> None:
    paths = sorted((lfw_dev_dir / "images").glob("A*/*.jpg"))[:20]
    batch = decode_batch([p.read_bytes() for p in paths])
    assert batch.statuses == [st.OK] * len(paths)
    for path, pixels in zip(paths, batch.pixels, strict=True):
        with Image.open(path) as reference:
            np.testing.assert_array_equal(pixels, np.asarray(reference.convert("RGB")))
