"""The fixed ArcFace-112 -> dlib chip-150 warp: the matrix, the torch warp, and dlib's own get_face_chip."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest
import torch
from PIL import Image

from froq_ray.imaging import align

LFW_IMAGES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "lfw-dev" / "images"


def lfw_crops(count: int) -> np.ndarray:
    files = sorted(LFW_IMAGES.glob("*/*.jpg"))[::97][:count]
    assert len(files) == count
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def complex_similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent least-squares similarity: dst = a * src + b over complex numbers
    (a = scale * e^{i angle})."""
    z, w = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
    design = np.stack([z, np.ones_like(z)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, w, rcond=None)
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def numpy_bilinear_dlib(image: np.ndarray, out_to_in: np.ndarray, size: int) -> np.ndarray:
    """Reference sampler with dlib's rules: pixel centres at integers, black unless the 2x2 neighbourhood
    is inside the image. image HWC float -> size x size x C."""
    h, w, _ = image.shape
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    u = out_to_in[0, 0] * xs + out_to_in[0, 1] * ys + out_to_in[0, 2]
    v = out_to_in[1, 0] * xs + out_to_in[1, 1] * ys + out_to_in[1, 2]
    left, top = np.floor(u).astype(int), np.floor(v).astype(int)
    ok = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    lc, tc = np.clip(left, 0, w - 2), np.clip(top, 0, h - 2)
    fx, fy = (u - left)[..., None], (v - top)[..., None]
    top_row = (1 - fx) * image[tc, lc] + fx * image[tc, lc + 1]
    bottom_row = (1 - fx) * image[tc + 1, lc] + fx * image[tc + 1, lc + 1]
    out = (1 - fy) * top_row + fy * bottom_row
    return out * ok[..., None]


def test_template_matches_dlib_formula() -> None:
    template = align.dlib_chip_template(150, 0.25)
    # p0 = (0.8595674595992, 0.2134981538014): (0.25 + p) / 1.5 * 150
    assert template[0] == pytest.approx([(0.25 + 0.8595674595992) * 100, (0.25 + 0.2134981538014) * 100])
    assert align.dlib_chip_template(200, 0.0)[4] == pytest.approx(
        [0.4901123135679 * 200, 0.6277975316475 * 200]
    )


def test_similarity_transform_recovers_exact_and_least_squares_fits() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([4.0, -9.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    fit = align.similarity_transform(src, dst)
    assert np.allclose(fit[:, :2], scale * rot, atol=1e-12) and np.allclose(fit[:, 2], shift, atol=1e-10)
    noisy = dst + rng.normal(0, 2.0, size=dst.shape)
    assert np.allclose(align.similarity_transform(src, noisy), complex_similarity_fit(src, noisy), atol=1e-9)


def test_mean_arcface_landmarks_land_on_dlib_template() -> None:
    forward = align.invert_affine(align.dlib_chip_to_source_matrix())  # source pixel -> chip pixel
    mapped = apply(forward, align.ARCFACE112_MEAN_LANDMARKS_5)
    errors = np.linalg.norm(mapped - align.dlib_chip_template(), axis=1)
    print(f"landmark -> template error (chip px): {np.round(errors, 3)}")
    assert errors.max() < 1.5 and np.sqrt((errors**2).mean()) < 1.0
    # the inverse really is the inverse
    back = apply(align.dlib_chip_to_source_matrix(), mapped)
    assert np.allclose(back, align.ARCFACE112_MEAN_LANDMARKS_5, atol=1e-9)


def test_torch_warp_matches_independent_numpy_sampler() -> None:
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, size=(2, 112, 112, 3))
    matrix = align.dlib_chip_to_source_matrix()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float64)
    ours = align.warp_arcface_to_dlib_chip(x).permute(0, 2, 3, 1).numpy()
    for image, chip in zip(images, ours, strict=True):
        reference = numpy_bilinear_dlib(image, matrix, 150)
        assert np.abs(chip - reference).max() < 1e-6
        assert (reference == 0).all(axis=-1).mean() > 0.05  # the chip is looser than the crop: black margins


def test_torch_warp_reproduces_dlib_get_face_chip_on_real_faces() -> None:
    crops = lfw_crops(4)
    points = np.round(align.ARCFACE112_MEAN_LANDMARKS_5).astype(int)  # dlib landmarks are whole pixels
    detection = dlib.full_object_detection(
        dlib.rectangle(0, 0, 111, 111), [dlib.point(*map(int, p)) for p in points]
    )
    matrix = align.dlib_chip_to_source_matrix(points.astype(np.float64))
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    ours = align.warp_affine(x, matrix, (150, 150)).permute(0, 2, 3, 1).numpy()
    for crop, chip in zip(crops, ours, strict=True):
        reference = dlib.get_face_chip(crop, detection, 150, 0.25).astype(np.float64)
        diff = chip - reference
        # dlib truncates its bilinear result to uint8: ours is the same value before truncation
        assert diff.min() > -1e-3 and diff.max() < 1 + 1e-3, (diff.min(), diff.max())


def test_warp_shapes_and_input_checks() -> None:
    x = torch.zeros(3, 3, 112, 112)
    assert align.warp_arcface_to_dlib_chip(x).shape == (3, 3, 150, 150)
    assert align.warp_arcface_to_dlib_chip(x, chip_size=200).shape == (3, 3, 200, 200)
    with pytest.raises(ValueError, match="112"):
        align.warp_arcface_to_dlib_chip(torch.zeros(1, 3, 150, 150))
