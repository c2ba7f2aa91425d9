"""The fixed warp from a 112x112 ArcFace-aligned crop to dlib's 150x150 face chip.

dlib's ``get_face_chip(img, landmarks, size, padding)`` (``get_face_chip_details`` and
``extract_image_chips`` in dlib/image_transforms/interpolation.h) does this:

1. its 5-point template ``p_i`` (unit square) is moved into the chip:
   ``q_i = (padding + p_i) / (1 + 2 padding) * size``;
2. ``T`` = least-squares similarity transform from the ``q_i`` to the image landmarks, with scale ``s`` and
   angle ``a``;
3. the chip covers a square of side ``size * s - 1`` image pixels centred on ``T(size/2, size/2)`` and rotated
   by ``a``; chip pixels ``0 .. size-1`` span it corner to corner, sampled bilinearly (pixel centres at
   integer coordinates; a sample whose 2x2 neighbourhood leaves the image is black).

The 5 landmarks of dlib's predictor sit at nearly the same place in every ArcFace crop, so one matrix built
from their mean positions replaces the landmark model at run time.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

ARCFACE_SIZE = 112
DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25

# dlib's 5-point chip template (get_face_chip_details), unit coordinates: outer and inner corner of the
# eye on the image's right, outer and inner corner of the other eye, bottom of the nose.
DLIB_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

# Mean positions of dlib's 5 landmarks in ArcFace-aligned 112x112 crops (pixels, same order; measured on LFW).
ARCFACE112_MEAN_LANDMARKS_5 = np.array(
    [
        [79.52, 52.88],
        [65.80, 53.29],
        [31.24, 53.23],
        [44.98, 53.46],
        [55.61, 79.36],
    ]
)


def dlib_chip_template(size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING) -> np.ndarray:
    """Where dlib puts the 5 landmarks in a ``size`` x ``size`` chip, in chip pixels, shape (5, 2)."""
    return (padding + DLIB_TEMPLATE_5) / (2.0 * padding + 1.0) * size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (scale, rotation, translation) mapping ``src`` points onto ``dst`` (Umeyama
    1991, no reflection), as a 2x3 matrix acting on column vectors ``(x, y, 1)``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / (src_c**2).sum(axis=1).mean()
    linear = scale * rotation
    return np.hstack([linear, (dst_mean - linear @ src_mean)[:, None]])


def dlib_chip_to_source_matrix(
    landmarks: np.ndarray = ARCFACE112_MEAN_LANDMARKS_5,
    size: int = DLIB_CHIP_SIZE,
    padding: float = DLIB_CHIP_PADDING,
) -> np.ndarray:
    """2x3 matrix taking chip pixel coordinates to source-image pixel coordinates, exactly as dlib's
    ``get_face_chip`` samples (its extraction square is ``size * s - 1`` source pixels wide and chip pixels
    ``0`` and ``size - 1`` sit on its edges, so this is not quite ``T`` itself)."""
    fit = similarity_transform(dlib_chip_template(size, padding), landmarks)
    linear = fit[:, :2]
    scale = float(np.hypot(linear[0, 0], linear[1, 0]))
    rotation = linear / scale
    centre = linear @ np.array([size / 2.0, size / 2.0]) + fit[:, 2]
    step = (size * scale - 1.0) / (size - 1.0)  # source pixels per chip pixel
    chip_centre = np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    out_linear = step * rotation
    return np.hstack([out_linear, (centre - out_linear @ chip_centre)[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (acting on column vectors ``(x, y, 1)``), shape (2, 3) float64; e.g.
    source pixel -> chip pixel from :func:`dlib_chip_to_source_matrix`. Raises numpy.linalg.LinAlgError when the
    linear part is singular."""
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]])


def _pixel_to_grid(size: tuple[int, int]) -> np.ndarray:
    """3x3 map from pixel coordinates (centres at 0 .. n-1) to grid_sample's [-1, 1] (align_corners=True);
    ``size`` is (height, width)."""
    height, width = size
    return np.array([[2.0 / (width - 1), 0.0, -1.0], [0.0, 2.0 / (height - 1), -1.0], [0.0, 0.0, 1.0]])


def affine_theta(out_to_in: np.ndarray, in_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """``affine_grid`` theta (normalised output -> normalised input, align_corners=True) for a 2x3 pixel
    matrix ``out_to_in``; sizes are (height, width)."""
    full = np.vstack([out_to_in, [0.0, 0.0, 1.0]])
    return (_pixel_to_grid(in_size) @ full @ np.linalg.inv(_pixel_to_grid(out_size)))[:2]


def warp_affine(x: torch.Tensor, out_to_in: np.ndarray, out_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear warp of float NCHW images by a 2x3 output-pixel -> input-pixel matrix, dlib style: a sample
    whose 2x2 neighbourhood is not entirely inside the input is 0."""
    n, c, h, w = x.shape
    theta = torch.as_tensor(affine_theta(out_to_in, (h, w), out_size), dtype=x.dtype, device=x.device)
    grid = F.affine_grid(
        theta.unsqueeze(0).expand(n, 2, 3), [n, c, out_size[0], out_size[1]], align_corners=True
    )
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    # dlib samples only where floor(u) >= 0 and floor(u) + 1 <= w - 1, i.e. 0 <= u < w - 1 (likewise v).
    gx, gy = grid[..., 0], grid[..., 1]
    inside = (gx >= -1) & (gx < 1) & (gy >= -1) & (gy < 1)
    return out * inside.unsqueeze(1).to(out.dtype)


@lru_cache(maxsize=8)
def _arcface_to_chip_matrix(chip_size: int) -> np.ndarray:
    return dlib_chip_to_source_matrix(ARCFACE112_MEAN_LANDMARKS_5, chip_size, DLIB_CHIP_PADDING)


def warp_arcface_to_dlib_chip(x: torch.Tensor, chip_size: int = DLIB_CHIP_SIZE) -> torch.Tensor:
    """Float NCHW pixels of 112x112 ArcFace-aligned crops -> float NCHW dlib face chips (chip_size square).

    Works on any device and float dtype; the geometry is the one fixed similarity transform built from the
    mean landmark positions (see the module docstring).
    """
    if x.dim() != 4 or x.shape[-1] != ARCFACE_SIZE or x.shape[-2] != ARCFACE_SIZE:
        raise ValueError(
            f"expected (N, C, {ARCFACE_SIZE}, {ARCFACE_SIZE}) ArcFace crops, got {tuple(x.shape)}"
        )
    return warp_affine(x, _arcface_to_chip_matrix(chip_size), (chip_size, chip_size))
