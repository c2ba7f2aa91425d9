"""Class centres as a streaming group-by: per-chunk partial sums of L2-normalised embeddings, merged.

A class centre is the mean of the L2-normalised embeddings of one identity. It is never computed from all
embeddings at once: each chunk (a Parquet shard, a Ray batch) becomes a :class:`CentreSums` holding, per
identity present in the chunk, the sum of its unit embeddings (float64) and its image count; partial sums are
merged with :func:`merge_partials` (exact up to float64 rounding, independent of chunk order because the
merged identities are sorted). In a distributed run each map task returns its shard's partial sums
(K_shard x D) and the driver, or a tree of reducers, merges them.

The sums (not the means) are what the rest of the curation code needs: the leave-one-out centre of an image
is ``sum - x`` and the centre direction is ``sum / |sum|`` (cosine does not depend on the 1/n factor).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

SUM_DTYPE = np.float64


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32). A zero or non-finite row raises: it has no direction."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    norms = np.sqrt(np.einsum("nd,nd->n", x, x))  # float32: no float64 copy of the chunk
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} embedding row(s) are zero or not finite (first at row {int(np.argmax(bad))})"
        )
    return x / norms[:, None]


@dataclass
class CentreSums:
    """Per-identity sums of unit embeddings: ``identities`` sorted and unique, ``sums`` (K, D) float64,
    ``counts`` (K,) int64."""

    identities: np.ndarray
    sums: np.ndarray
    counts: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    def __len__(self) -> int:
        return int(self.identities.size)

    @classmethod
    def empty(cls, dim: int) -> CentreSums:
        return cls(
            np.array([], dtype=object), np.zeros((0, dim), dtype=SUM_DTYPE), np.zeros(0, dtype=np.int64)
        )

    @classmethod
    def from_chunk(cls, embeddings: np.ndarray, identities: Sequence[str] | np.ndarray) -> CentreSums:
        """The partial sums of one chunk: embeddings (N, D) raw (they are L2-normalised here), labels (N,)."""
        unit = l2_normalise(embeddings)
        labels = np.asarray(identities, dtype=object)
        if labels.shape != (unit.shape[0],):
            raise ValueError(f"{labels.size} identities for {unit.shape[0]} embeddings")
        names, inverse = np.unique(labels.astype(str), return_inverse=True)
        sums = _group_sum(unit, inverse, names.size)
        counts = np.bincount(inverse, minlength=names.size).astype(np.int64)
        return cls(names.astype(object), sums, counts)

    def index_of(self, identities: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row index of each label in ``self.identities`` (int64); -1 for a label not present."""
        return index_of(self.identities, identities)

    def means(self) -> np.ndarray:
        """Class centres as defined: mean of the unit embeddings (K, D) float64 (not re-normalised)."""
        return self.sums / self.counts[:, None]

    def directions(self, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Unit-length centre directions (K, D): what cosine similarity to a centre uses."""
        norms = np.linalg.norm(self.sums, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.sums / norms).astype(dtype)

    def table(self) -> CentreTable:
        """What scoring needs, in half the memory of the float64 sums: float32 unit directions, |sum|, n."""
        norms = np.linalg.norm(self.sums, axis=1)
        return CentreTable(self.identities, self.directions(np.float32), norms, self.counts)


@dataclass
class CentreTable:
    """Centres for scoring: ``directions`` (K, D) float32 unit rows (sum / |sum|), ``norms`` (K,) float64
    = |sum|, ``counts`` (K,) int64, ``identities`` sorted. ``norms * directions`` is the sum again (to float32
    precision), which is all the leave-one-out CCS needs."""

    identities: np.ndarray
    directions: np.ndarray
    norms: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return int(self.identities.size)

    @property
    def dim(self) -> int:
        return int(self.directions.shape[1])

    def index_of(self, identities: Sequence[str] | np.ndarray) -> np.ndarray:
        return index_of(self.identities, identities)


def index_of(sorted_names: np.ndarray, identities: Sequence[str] | np.ndarray) -> np.ndarray:
    """Position of each label in the sorted unique ``sorted_names`` (int64), -1 where absent."""
    labels = np.asarray(identities, dtype=object).astype(str)
    keys = sorted_names.astype(str)
    if keys.size == 0:
        return np.full(labels.size, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(keys, labels), keys.size - 1)
    return np.where(keys[pos] == labels, pos, -1).astype(np.int64)


def _group_sum(unit: np.ndarray, inverse: np.ndarray, groups: int) -> np.ndarray:
    """Row sums per group (torch ``index_add_``: one pass, no Python loop), returned as float64.

    Within one chunk the sums accumulate in float32 (a float64 copy of the chunk would cost more than the
    sums): an identity's images in one chunk are few, so the relative error stays ~1e-7; the merges across
    chunks are float64."""
    out = torch.zeros((groups, unit.shape[1]), dtype=torch.float32)
    out.index_add_(0, torch.from_numpy(np.asarray(inverse, dtype=np.int64)), torch.from_numpy(unit))
    return out.double().numpy()


def merge_partials(parts: Iterable[CentreSums]) -> CentreSums:
    """Merge partial sums (e.g. one per shard) into one :class:`CentreSums` over the union of identities."""
    parts = [p for p in parts]
    if not parts:
        raise ValueError("no partial centre sums to merge")
    dims = {p.dim for p in parts}
    if len(dims) != 1:
        raise ValueError(f"partial sums have different embedding sizes: {sorted(dims)}")
    names = np.unique(np.concatenate([p.identities.astype(str) for p in parts]))
    out = torch.zeros((names.size, dims.pop()), dtype=torch.float64)
    counts = np.zeros(names.size, dtype=np.int64)
    for part in parts:  # one part at a time: no stacked copy of all partial sums
        rows = np.searchsorted(names, part.identities.astype(str))
        out.index_add_(0, torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(part.sums))
        np.add.at(counts, rows, part.counts)
    return CentreSums(names.astype(object), out.numpy(), counts)


class CentreAccumulator:
    """Running merge of partial sums that stays linear in the input size.

    Partials are buffered and merged into the running total only once the buffered identity rows reach the
    size of the total (or ``min_buffer_rows``), so each buffered row is sorted a bounded number of times
    instead of the whole total being re-sorted for every shard.
    """

    def __init__(self, min_buffer_rows: int = 65_536) -> None:
        self.min_buffer_rows = min_buffer_rows
        self._total: CentreSums | None = None
        self._buffer: list[CentreSums] = []
        self._buffered_rows = 0

    def add(self, part: CentreSums) -> None:
        if len(part) == 0:
            return
        self._buffer.append(part)
        self._buffered_rows += len(part)
        if self._buffered_rows >= max(self.min_buffer_rows, 0 if self._total is None else len(self._total)):
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._total = merge_partials(([self._total] if self._total is not None else []) + self._buffer)
            self._buffer, self._buffered_rows = [], 0

    def result(self) -> CentreSums:
        self._flush()
        if self._total is None:
            raise ValueError("no embeddings to compute class centres from")
        return self._total


def centre_sums(chunks: Iterable[tuple[np.ndarray, Sequence[str] | np.ndarray]]) -> CentreSums:
    """Streaming centre sums over ``(embeddings, identities)`` chunks: one partial per chunk, merged by a
    :class:`CentreAccumulator`, so memory holds the running total, the buffer and one chunk."""
    accumulator = CentreAccumulator()
    for embeddings, identities in chunks:
        if len(identities):
            accumulator.add(CentreSums.from_chunk(embeddings, identities))
    return accumulator.result()
