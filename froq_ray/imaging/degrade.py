"""Seeded, replayable image degradations, and a tool that writes a degraded copy of an image tree.

Each degradation kind draws its parameters from a severity range with a numpy ``Generator`` and records
them in a :class:`Degradation`; :func:`apply_degradation` replays a record exactly (the noise kind records the
seed of its noise field), so a ``degradations.csv`` fully describes a degraded tree.

Kinds (severity ranges in :data:`DEFAULT_RANGES`, overridable per call):

- ``downscale``: shrink by ``factor`` with an antialiased bicubic filter, then scale back up (bicubic).
- ``blur``: Gaussian blur with standard deviation ``sigma`` pixels (PIL's ``GaussianBlur``).
- ``jpeg``: re-encode as JPEG at ``quality`` (4:2:0 chroma subsampling, like most cameras and web pipelines).
- ``noise``: additive Gaussian noise of standard deviation ``sigma`` (pixel units, per channel), clipped.
- ``exposure``: ``stops`` EV of over (+) or under (-) exposure, applied in linear light
  (sRGB approximated by gamma 2.2) and clipped, so highlights saturate when over-exposed.
- ``occlusion``: a filled rectangle covering ``area`` (fraction) of the image; not in the default set.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

DEFAULT_KINDS: tuple[str, ...] = ("downscale", "blur", "jpeg", "noise", "exposure")
ALL_KINDS: tuple[str, ...] = DEFAULT_KINDS + ("occlusion",)

DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "downscale": (2.0, 6.0),  # factor
    "blur": (1.0, 3.0),  # sigma, pixels
    "jpeg": (5, 30),  # quality
    "noise": (4.0, 20.0),  # sigma, pixel units
    "exposure": (1.0, 2.5),  # |stops|; the sign is drawn separately
    "occlusion": (0.1, 0.3),  # fraction of the image area
}

Params = dict[str, float | int]


@dataclass(frozen=True)
class Degradation:
    """What was applied: a kind and the exact parameters that replay it."""

    kind: str
    params: Params = field(default_factory=dict)


def _round(value: float) -> float:
    return round(float(value), 3)


# ---------------------------------------------------------------- kinds: sample parameters, apply them


def _sample_downscale(rng: np.random.Generator, lo: float, hi: float, _shape: tuple[int, int]) -> Params:
    return {"factor": _round(rng.uniform(lo, hi))}


def _apply_downscale(image: np.ndarray, params: Params) -> np.ndarray:
    height, width = image.shape[:2]
    factor = float(params["factor"])
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    pil = Image.fromarray(image).resize(small, Image.Resampling.BICUBIC)
    return np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC))


def _sample_blur(rng: np.random.Generator, lo: float, hi: float, _shape: tuple[int, int]) -> Params:
    return {"sigma": _round(rng.uniform(lo, hi))}


def _apply_blur(image: np.ndarray, params: Params) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=float(params["sigma"]))))


def _sample_jpeg(rng: np.random.Generator, lo: float, hi: float, _shape: tuple[int, int]) -> Params:
    return {"quality": int(rng.integers(int(lo), int(hi), endpoint=True))}


def _apply_jpeg(image: np.ndarray, params: Params) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(params["quality"]), subsampling="4:2:0")
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def _sample_noise(rng: np.random.Generator, lo: float, hi: float, _shape: tuple[int, int]) -> Params:
    return {"sigma": _round(rng.uniform(lo, hi)), "seed": int(rng.integers(0, 2**31 - 1))}


def _apply_noise(image: np.ndarray, params: Params) -> np.ndarray:
    noise = np.random.default_rng(int(params["seed"])).normal(0.0, float(params["sigma"]), image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def _sample_exposure(rng: np.random.Generator, lo: float, hi: float, _shape: tuple[int, int]) -> Params:
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return {"stops": _round(sign * rng.uniform(lo, hi))}


_GAMMA = 2.2


def _apply_exposure(image: np.ndarray, params: Params) -> np.ndarray:
    linear = (image.astype(np.float64) / 255.0) ** _GAMMA * 2.0 ** float(params["stops"])
    return np.rint(255.0 * np.clip(linear, 0.0, 1.0) ** (1.0 / _GAMMA)).astype(np.uint8)


def _sample_occlusion(rng: np.random.Generator, lo: float, hi: float, shape: tuple[int, int]) -> Params:
    height, width = shape
    area = rng.uniform(lo, hi) * height * width
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # width / height
    w = int(min(width, max(1, round(math.sqrt(area * aspect)))))
    h = int(min(height, max(1, round(area / w))))
    x = int(rng.integers(0, width - w, endpoint=True))
    y = int(rng.integers(0, height - h, endpoint=True))
    return {"x": x, "y": y, "w": w, "h": h, "fill": int(rng.integers(0, 255, endpoint=True))}


def _apply_occlusion(image: np.ndarray, params: Params) -> np.ndarray:
    out = image.copy()
    x, y, w, h = (int(params[k]) for k in ("x", "y", "w", "h"))
    out[y : y + h, x : x + w] = int(params["fill"])
    return out


@dataclass(frozen=True)
class _Kind:
    sample: Callable[[np.random.Generator, float, float, tuple[int, int]], Params]
    apply: Callable[[np.ndarray, Params], np.ndarray]


_KINDS: dict[str, _Kind] = {
    "downscale": _Kind(_sample_downscale, _apply_downscale),
    "blur": _Kind(_sample_blur, _apply_blur),
    "jpeg": _Kind(_sample_jpeg, _apply_jpeg),
    "noise": _Kind(_sample_noise, _apply_noise),
    "exposure": _Kind(_sample_exposure, _apply_exposure),
    "occlusion": _Kind(_sample_occlusion, _apply_occlusion),
}


# ---------------------------------------------------------------- public API on arrays


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """Validate kind names (unknown or repeated names raise ``ValueError``)."""
    unknown = [k for k in kinds if k not in _KINDS]
    if unknown:
        raise ValueError(f"unknown degradation kind(s) {unknown}; known: {list(ALL_KINDS)}")
    if len(set(kinds)) != len(kinds) or not kinds:
        raise ValueError(f"kinds must be a non-empty list without repeats, got {list(kinds)}")
    return tuple(kinds)


def sample_degradation(
    kind: str,
    rng: np.random.Generator,
    shape: tuple[int, int],
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Degradation:
    """Draw parameters for ``kind`` within its severity range, for an image of (height, width) ``shape``."""
    check_kinds([kind])
    lo, hi = {**DEFAULT_RANGES, **(ranges or {})}[kind]
    if lo > hi:
        raise ValueError(f"severity range for {kind} must have low <= high, got ({lo}, {hi})")
    return Degradation(kind, _KINDS[kind].sample(rng, lo, hi, shape))


def apply_degradation(image: np.ndarray, record: Degradation) -> np.ndarray:
    """Apply one recorded degradation to a uint8 RGB (H, W, 3) image; deterministic given the record."""
    check_kinds([record.kind])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(_KINDS[record.kind].apply(image, record.params), dtype=np.uint8)


def degrade(
    image: np.ndarray,
    rng: np.random.Generator,
    kinds: Sequence[str] = DEFAULT_KINDS,
    count: int = 1,
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[np.ndarray, list[Degradation]]:
    """Apply ``count`` distinct kinds drawn from ``kinds`` (in the drawn order) with sampled severities.

    Returns the degraded image and the records, in the order they were applied.
    """
    kinds = check_kinds(kinds)
    if not 1 <= count <= len(kinds):
        raise ValueError(f"count must be in 1..{len(kinds)}, got {count}")
    chosen = [kinds[i] for i in rng.choice(len(kinds), size=count, replace=False)]
    records = []
    for kind in chosen:
        record = sample_degradation(kind, rng, image.shape[:2], ranges)
        image = apply_degradation(image, record)
        records.append(record)
    return image, records


# ---------------------------------------------------------------- a degraded copy of an image tree

IMAGE_SUFFIXES = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
CSV_NAME = "degradations.csv"
CSV_COLUMNS = ("relpath", "degraded", "kind", "params", "error")
# Container settings for degraded files: near-lossless, so the file adds little to the recorded degradation.
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "JPEG": {"quality": 97, "subsampling": "4:4:4"},
    "WEBP": {"lossless": True},
}


@dataclass(frozen=True)
class FolderRow:
    """One image of the tree. ``kind`` joins the applied kinds with "+"; ``params`` maps kind -> params."""

    relpath: str
    degraded: bool
    kind: str = ""
    params: str = ""
    error: str = ""


@dataclass
class FolderSummary:
    src_root: Path
    dst_root: Path
    seed: int
    fraction: float
    files: int  # every file copied or written, images included
    rows: list[FolderRow]  # one per image, sorted by relpath

    @property
    def images(self) -> int:
        return len(self.rows)

    @property
    def degraded(self) -> int:
        return sum(row.degraded for row in self.rows)

    @property
    def errors(self) -> list[FolderRow]:
        return [row for row in self.rows if row.error]

    @property
    def csv_path(self) -> Path:
        return self.dst_root / CSV_NAME


def image_rng(seed: int, relpath: str) -> np.random.Generator:
    """The generator of one image: depends only on the seed and the relative path, not on the rest of the tree."""
    return np.random.default_rng([seed, zlib.crc32(relpath.encode("utf-8"))])


def degrade_folder(
    src_root: str | Path,
    dst_root: str | Path,
    seed: int,
    fraction: float = 0.5,
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    count: int = 1,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    overwrite: bool = False,
) -> FolderSummary:
    """Copy ``src_root`` to ``dst_root``, degrading a seeded ``fraction`` of its images.

    - Images are files with a suffix in :data:`IMAGE_SUFFIXES`; exactly ``round(fraction * n_images)`` of them,
      chosen by ``seed``, are decoded (EXIF orientation applied, RGB), degraded with :func:`degrade` and
      written back in the same format under the same relative path (JPEG at quality 97 4:4:4, WebP lossless).
    - Every other file, images not chosen included, is copied byte for byte.
    - ``dst_root/degradations.csv`` lists every image: relpath, degraded (0/1), kind, params (JSON), error
      (a chosen image that cannot be decoded is copied unchanged and its error recorded).
    - Same inputs and seed -> byte-identical outputs.
    ``dst_root`` must be empty or absent unless ``overwrite`` (files are then replaced; stale files stay).
    """
    src, dst = Path(src_root), Path(dst_root)
    kinds = check_kinds(kinds)
    _check_roots(src, dst, overwrite)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    files = [f for f in files if f != CSV_NAME]
    images = [f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    n_chosen = round(fraction * len(images))
    chosen = {
        images[i] for i in np.random.default_rng(seed).choice(len(images), size=n_chosen, replace=False)
    }
    image_set = set(images)
    rows = []
    for relpath in files:
        target = dst / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if relpath in chosen:
            rng = image_rng(seed, relpath)
            rows.append(_write_degraded(src / relpath, target, relpath, rng, kinds, count, ranges))
        else:
            shutil.copyfile(src / relpath, target)
            if relpath in image_set:
                rows.append(FolderRow(relpath, degraded=False))
    _write_csv(dst / CSV_NAME, rows)
    return FolderSummary(src, dst, seed, fraction, len(files), rows)


def _check_roots(src: Path, dst: Path, overwrite: bool) -> None:
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if dst.resolve() == src.resolve() or dst.resolve().is_relative_to(src.resolve()):
        raise ValueError(f"destination {dst} must not be inside the source {src}")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(f"destination {dst} is not empty (pass overwrite=True to replace its files)")


def _write_degraded(
    source: Path,
    target: Path,
    relpath: str,
    rng: np.random.Generator,
    kinds: Sequence[str],
    count: int,
    ranges: Mapping[str, tuple[float, float]] | None,
) -> FolderRow:
    data = source.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            pixels = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - an unreadable image is copied as is and reported
        target.write_bytes(data)
        return FolderRow(relpath, degraded=False, error=f"{type(exc).__name__}: {exc}")
    degraded, records = degrade(pixels, rng, kinds, count, ranges=ranges)
    fmt = IMAGE_SUFFIXES[source.suffix.lower()]
    Image.fromarray(degraded).save(target, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    kind = "+".join(r.kind for r in records)
    params = json.dumps({r.kind: r.params for r in records}, separators=(",", ":"))
    return FolderRow(relpath, degraded=True, kind=kind, params=params)


def _write_csv(path: Path, rows: Sequence[FolderRow]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([row.relpath, int(row.degraded), row.kind, row.params, row.error])


def read_degradations_csv(path: str | Path) -> list[FolderRow]:
    """Read back a ``degradations.csv`` written by :func:`degrade_folder`."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [
            FolderRow(r["relpath"], r["degraded"] == "1", r["kind"], r["params"], r["error"])
            for r in csv.DictReader(handle)
        ]


def records_of(row: FolderRow) -> list[Degradation]:
    """The :class:`Degradation` records of a CSV row, in the order they were applied."""
    if not row.degraded:
        return []
    params = json.loads(row.params)
    return [Degradation(kind, params[kind]) for kind in row.kind.split("+")]
