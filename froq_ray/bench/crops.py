"""Benchmark input: N realistic 112x112 JPEG face crops written to a folder, reproducible from a seed.

Two sources, both deterministic per (seed, image index), so any N and any number of writer processes give
the same files:

- ``synthetic`` (default; needs nothing but numpy and Pillow, so it works on a bare GPU machine): a
  face-like picture -- shaded background, skin-toned face ellipse, hair cap, eyes, brows, nose and mouth --
  with per-image random colours, geometry and sensor-like noise. Encoded at JPEG quality 88-94 it weighs
  about 5-8 KB, like real aligned crops (LFW-dev averages 5.4 KB).
- a folder of real crops (e.g. LFW-dev): image ``i`` is source file ``i mod len(sources)`` re-encoded
  with a small seeded jitter (gain, offset, one-pixel shift, noise) and a random JPEG quality, so repeated
  sources still give distinct bytes.

Files go to ``<root>/id<k>/img<i>.jpg``, ``IMAGES_PER_IDENTITY`` images per identity folder.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 112
IMAGES_PER_IDENTITY = 20
JPEG_QUALITY = (88, 95)  # [low, high)
SOURCE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class CropSet:
    """What :func:`write_crops` produced."""

    root: Path
    paths: list[Path]
    mean_bytes: float
    min_bytes: int
    max_bytes: int
    source: str

    def summary(self) -> dict[str, object]:
        return {
            "images": len(self.paths),
            "source": self.source,
            "mean_kb": round(self.mean_bytes / 1024, 2),
            "min_kb": round(self.min_bytes / 1024, 2),
            "max_kb": round(self.max_bytes / 1024, 2),
        }


def _ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1.0


def synthetic_face(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8 face-like crop drawn with ``rng`` (see module doc)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    light = rng.uniform(-0.3, 0.3)  # left/right lighting
    background = rng.uniform(15, 140, size=3) * (0.7 + 0.3 * y[..., None] + 0.2 * x[..., None])
    image = background + rng.normal(0, 10, size=(size, size, 1))
    cx, cy = 0.5 + rng.uniform(-0.03, 0.03), 0.56 + rng.uniform(-0.03, 0.03)
    face_rx, face_ry = rng.uniform(0.28, 0.36), rng.uniform(0.38, 0.46)
    hair = _ellipse(y, x, cy - 0.12, cx, face_ry, face_rx + 0.04) & (y < cy - 0.1)
    image[hair] = rng.uniform(10, 90, size=3) + rng.normal(0, 18, size=(int(hair.sum()), 1))
    face = _ellipse(y, x, cy, cx, face_ry, face_rx) & ~(hair & (y < cy - 0.25))
    skin = rng.uniform([140, 90, 70], [235, 180, 150])
    shade = 1.0 + light * (x - cx) / face_rx - 0.2 * (y - cy)
    image = np.where(face[..., None], skin * shade[..., None], image)
    eye_y, eye_dx = cy - 0.1, rng.uniform(0.12, 0.16)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        image[_ellipse(y, x, eye_y, ex, 0.03, 0.065)] = rng.uniform(200, 240)
        image[_ellipse(y, x, eye_y, ex, 0.025, 0.025)] = rng.uniform(10, 70, size=3)
        image[_ellipse(y, x, eye_y - 0.065, ex, 0.012, 0.08)] = rng.uniform(20, 80, size=3)  # brow
    nose = (np.abs(x - cx) < 0.025) & (y > eye_y) & (y < cy + 0.12)
    image[nose] *= 0.85
    image[_ellipse(y, x, cy + 0.22, cx, 0.03, rng.uniform(0.08, 0.13))] = rng.uniform(
        [120, 30, 30], [190, 80, 80]
    )
    image += rng.normal(0, rng.uniform(3, 6), size=(size, size, 3))  # sensor noise and skin texture
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def jittered(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real crop with a small random gain/offset, a shift of up to one pixel and mild noise."""
    shifted = np.roll(pixels, shift=(int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))
    out = shifted.astype(np.float32) * rng.uniform(0.92, 1.08) + rng.uniform(-8, 8)
    out += rng.normal(0, 1.5, size=out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def crop_path(root: Path, index: int) -> Path:
    return root / f"id{index // IMAGES_PER_IDENTITY:05d}" / f"img{index:07d}.jpg"


def list_sources(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted."""
    files = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in SOURCE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise FileNotFoundError(f"no source images (*{', *'.join(SOURCE_EXTENSIONS)}) under {folder}")
    return files


def crop_bytes(index: int, seed: int, sources: Sequence[Path] | None) -> bytes:
    """JPEG bytes of image ``index``: a function of (seed, index, sources) only."""
    rng = np.random.default_rng([seed, index])
    if sources:
        with Image.open(sources[index % len(sources)]) as image:
            pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC))
        pixels = jittered(pixels, rng)
    else:
        pixels = synthetic_face(rng)
    return jpeg_bytes(pixels, int(rng.integers(*JPEG_QUALITY)))


def _write_range(root: Path, start: int, stop: int, seed: int, sources: Sequence[Path] | None) -> list[int]:
    sizes = []
    for index in range(start, stop):
        data = crop_bytes(index, seed, sources)
        path = crop_path(root, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sizes.append(len(data))
    return sizes


def write_crops(
    root: str | os.PathLike,
    n: int,
    seed: int = 0,
    source_dir: str | os.PathLike | None = None,
    *,
    workers: int = 1,
    chunk: int = 500,
) -> CropSet:
    """Write ``n`` JPEG crops under ``root`` (with ``workers`` processes when > 1); see module doc."""
    if n < 1:
        raise ValueError(f"need at least one image, got n={n}")
    root = Path(root)
    sources = list_sources(source_dir) if source_dir is not None else None
    ranges = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    if workers > 1 and len(ranges) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(
                pool.map(_write_range, *zip(*[(root, a, b, seed, sources) for a, b in ranges], strict=True))
            )
    else:
        parts = [_write_range(root, a, b, seed, sources) for a, b in ranges]
    sizes = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    return CropSet(
        root=root,
        paths=[crop_path(root, i) for i in range(n)],
        mean_bytes=float(sizes.mean()),
        min_bytes=int(sizes.min()),
        max_bytes=int(sizes.max()),
        source=str(source_dir) if source_dir is not None else "synthetic",
    )
