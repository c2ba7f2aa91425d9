"""Train/validation split for distillation that never puts one person or one image on both sides.

Every row gets a split key: its identity when the dataset has one, else its source image path (a degraded
copy carries the path of the image it was made from, so it follows its source). A seeded, stable hash of
the key (sha256 of ``"<seed>:<key>"``, not Python's per-process ``hash()``) maps it to a number in [0, 1);
the row is in validation when that number is below ``validation_fraction``. The decision depends on the key
and the seed only: it is the same on every worker, in every run, whatever the row order or sharding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

_HASH_SCALE = float(2**64)


def _missing(value: Any) -> bool:
    if isinstance(value, str):
        return value == ""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def split_key_column(
    paths: Sequence[Any], identities: Sequence[Any] | None = None, source_paths: Sequence[Any] | None = None
) -> np.ndarray:
    """One split key per row: the identity where present (not null, not empty), else the source path, else
    the path. Returns an object array of strings."""
    paths = list(paths)
    n = len(paths)
    for name, column in (("identities", identities), ("source_paths", source_paths)):
        if column is not None and len(column) != n:
            raise ValueError(f"{name} has {len(column)} entries for {n} paths")
    identities = list(identities) if identities is not None else [None] * n
    sources = list(source_paths) if source_paths is not None else [None] * n
    keys = np.empty(n, dtype=object)
    for i, (path, identity, source) in enumerate(zip(paths, identities, sources, strict=True)):
        if not _missing(identity):
            keys[i] = str(identity)
        elif not _missing(source):
            keys[i] = str(source)
        elif not _missing(path):
            keys[i] = str(path)
        else:
            raise ValueError(f"row {i} has no identity, no source path and no path to split on")
    return keys


def key_position(key: str, seed: int) -> float:
    """The key's stable pseudo-random position in [0, 1) for this seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SCALE


def validation_mask(keys: Sequence[Any] | np.ndarray, validation_fraction: float, seed: int) -> np.ndarray:
    """Boolean array, True where the row's key falls in validation."""
    fraction = float(validation_fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be strictly between 0 and 1, got {validation_fraction!r}")
    positions: dict[str, float] = {}
    mask = np.empty(len(keys), dtype=bool)
    for i, key in enumerate(keys):
        key = str(key)
        position = positions.get(key)
        if position is None:
            position = positions[key] = key_position(key, seed)
        mask[i] = position < fraction
    return mask


def check_no_leak(keys: Sequence[Any] | np.ndarray, mask: Sequence[bool] | np.ndarray) -> None:
    """Raise ``ValueError`` if any key has rows on both the training and the validation side."""
    key_array = np.asarray([str(k) for k in keys], dtype=object)
    on_validation = np.asarray(mask, dtype=bool)
    if key_array.shape != on_validation.shape:
        raise ValueError(f"{key_array.size} keys but {on_validation.size} mask entries")
    leaked = sorted(set(key_array[on_validation]) & set(key_array[~on_validation]))
    if leaked:
        shown = ", ".join(leaked[:5]) + (f", ... ({len(leaked)} in all)" if len(leaked) > 5 else "")
        raise ValueError(f"train/validation leak: split keys on both sides: {shown}")
