"""A local identity-foldered image tree (``<root>/<identity>/.../<image>``) -> sorted listing and decoded crops.

Used by benchmarks and calibration on small local sets such as LFW-dev; large jobs list and read through
``froq_ray.storage`` instead. Decoding goes through :func:`froq_ray.imaging.decode.decode_batch`, so every
file gets a status; :func:`load_crops_strict` turns any failure into one error naming the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import status as st
from .decode import DEFAULT_SIZE, DecodedBatch, decode_batch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclass(frozen=True)
class IdentityFolder:
    """Image files under ``root``: ``paths`` relative (POSIX separators), sorted; ``identities`` aligned."""

    root: Path
    paths: list[str]
    identities: list[str]

    def absolute_paths(self) -> list[Path]:
        return [self.root / p for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)


def list_identity_folder(
    root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> IdentityFolder:
    """List the images of an identity-foldered tree, sorted by relative path.

    The identity of an image is the name of the top-level folder holding it (images in deeper sub-folders
    belong to that top-level identity). Files are matched by extension, case-insensitively; hidden files and
    folders (leading ``.``) are skipped. An image lying directly in ``root`` has no identity: ValueError.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    wanted = tuple(e.lower() for e in extensions)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(wanted):
                continue
            if rel_dir == Path("."):
                raise ValueError(f"{root / name}: images must sit in an identity folder under {root}")
            found.append((rel_dir / name).as_posix())
    found.sort()
    return IdentityFolder(root, found, [p.split("/", 1)[0] for p in found])


def _read_files(paths: Sequence[str | os.PathLike]) -> tuple[list[bytes | None], list[str | None]]:
    blobs: list[bytes | None] = []
    errors: list[str | None] = []
    for path in paths:
        try:
            blobs.append(Path(path).read_bytes())
            errors.append(None)
        except OSError as exc:
            blobs.append(None)
            errors.append(f"cannot read {path}: {type(exc).__name__}: {exc}")
    return blobs, errors


def load_crops(
    paths: Sequence[str | os.PathLike], size: int = DEFAULT_SIZE, chunk: int = 512
) -> DecodedBatch:
    """Read and decode files in order, ``chunk`` at a time; unreadable files get status ``read_error``."""
    n = len(paths)
    pixels = np.zeros((n, size, size, 3), dtype=np.uint8)
    widths = np.zeros(n, dtype=np.int32)
    heights = np.zeros(n, dtype=np.int32)
    statuses: list[str] = []
    errors: list[str | None] = []
    for start in range(0, n, chunk):
        blobs, read_errors = _read_files(paths[start : start + chunk])
        prior = [None if e is None else st.READ_ERROR for e in read_errors]
        batch = decode_batch(blobs, size, prior_statuses=prior, prior_errors=read_errors)
        stop = start + len(batch)
        pixels[start:stop], widths[start:stop], heights[start:stop] = (
            batch.pixels,
            batch.widths,
            batch.heights,
        )
        statuses.extend(batch.statuses)
        errors.extend(batch.errors)
    return DecodedBatch(pixels=pixels, statuses=statuses, errors=errors, widths=widths, heights=heights)


def load_crops_strict(paths: Sequence[str | os.PathLike], size: int = DEFAULT_SIZE) -> np.ndarray:
    """Decoded crops (N, size, size, 3) uint8, or ValueError naming every file that failed."""
    batch = load_crops(paths, size)
    failed = [
        f"{paths[k]}: {batch.statuses[k]}: {batch.errors[k]}" for k in np.flatnonzero(~batch.ok_mask).tolist()
    ]
    if failed:
        shown = "; ".join(failed[:5]) + (f"; ... ({len(failed)} in all)" if len(failed) > 5 else "")
        raise ValueError(f"{len(failed)} of {len(paths)} images failed to load: {shown}")
    return batch.pixels
