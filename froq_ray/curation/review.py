"""What the visual review (``froq review``) shows: selections over one review table (pandas/numpy, no I/O).

The review table has one row per annotation row: ``path`` (str), ``identity`` (str or None), ``status`` (str),
``quality`` (float64, NaN where missing), ``percentile`` (float64 0-100, NaN where missing) and, when a filter
output is given, the keep-list columns ``keep``, ``reason``, ``label_noise``, ``label_noise_rule``, ``ccs``,
``nnccs``, ``nearest_identity``. *Scored* rows are the ``ok`` rows with a finite quality; every selection below
looks only at them, in the order (quality, path), so it is deterministic whatever the input order:

- :func:`lowest` / :func:`highest`: the ``n`` lowest / highest qualities (ties: path ascending);
- :func:`dataset_percentile`: 100 x the share of scored rows whose quality is strictly lower (the
  ``quality_percentile`` definition, against this set instead of the calibration set);
- :func:`bands`: ``count`` equal-width percentile bands ``[100 k / count, 100 (k + 1) / count)`` (the last one
  closed), each with up to ``per_band`` images evenly spaced in (quality, path) order, lowest and highest of
  the band included;
- :func:`identity_samples`: up to ``n`` scored images of one identity, unflagged ones first, then best quality
  first (ties: path);
- :func:`label_noise_groups`: each flagged row (lowest CCS first, NaN last; ties: path) with samples of its own
  identity (itself excluded) and of its nearest other identity;
- :func:`merge_groups` / :func:`duplicate_pairs`: the filter's identity-merge suggestions and near-duplicate
  pairs (highest cosine first), with samples / the two images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import status as st

MERGE_COLUMNS = ("identity_a", "identity_b")
"""Required columns of the filter's identity-merge suggestions (optional: ``cosine``)."""
DUPLICATE_COLUMNS = ("path_a", "path_b")
"""Required columns of the filter's near-duplicate pairs (optional: ``cosine``)."""
COSINE = "cosine"


@dataclass(frozen=True)
class Band:
    """One percentile band: ``index`` (0-based), ``low``/``high`` (percent), ``total`` scored rows in it and
    the selected ``rows`` (a slice of the review table, in (quality, path) order)."""

    index: int
    low: float
    high: float
    total: int
    rows: pd.DataFrame


@dataclass(frozen=True)
class Group:
    """A row of the review: the ``subjects`` (the flagged image; the two images of a pair; empty for a merge)
    and the ``samples`` shown beside them, per side (``own``/``nearest`` or ``a``/``b``), plus the pair's
    ``cosine`` (NaN when not given) and its ``identities``."""

    subjects: pd.DataFrame
    samples: dict[str, pd.DataFrame]
    cosine: float = float("nan")
    identities: tuple[str | None, ...] = ()


def scored(table: pd.DataFrame) -> pd.DataFrame:
    """The ok rows with a finite quality, sorted by (quality, path)."""
    quality = table["quality"].to_numpy(dtype=np.float64)
    mask = (table["status"].to_numpy(dtype=object) == st.OK) & np.isfinite(quality)
    return table[mask].sort_values(["quality", "path"], kind="stable")


def lowest(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` scored rows of lowest quality, lowest first (ties: path ascending)."""
    return scored(table).head(n)


def highest(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` scored rows of highest quality, highest first (ties: path ascending)."""
    rows = scored(table)
    return rows.sort_values(["quality", "path"], ascending=[False, True], kind="stable").head(n)


def dataset_percentile(quality: np.ndarray) -> np.ndarray:
    """float64 ``(N,)``: 100 x the share of the finite values of ``quality`` strictly below each value (NaN
    stays NaN)."""
    quality = np.asarray(quality, dtype=np.float64)
    finite = np.sort(quality[np.isfinite(quality)])
    out = np.full(quality.shape, np.nan)
    if finite.size:
        where = np.isfinite(quality)
        out[where] = 100.0 * np.searchsorted(finite, quality[where], side="left") / finite.size
    return out


def band_index(percentile: np.ndarray, count: int) -> np.ndarray:
    """int64 band of each percentile (0-100): ``floor(p * count / 100)``, 100 in the last band; -1 for NaN."""
    p = np.asarray(percentile, dtype=np.float64)
    out = np.full(p.shape, -1, dtype=np.int64)
    finite = np.isfinite(p)
    out[finite] = np.clip(np.floor(np.clip(p[finite], 0.0, 100.0) * count / 100.0), 0, count - 1)
    return out


def evenly_spaced(rows: pd.DataFrame, k: int) -> pd.DataFrame:
    """``k`` rows evenly spaced through ``rows`` (first and last included), all of them when ``k >= len``."""
    if len(rows) <= k:
        return rows
    if k == 1:
        return rows.iloc[[0]]
    positions = np.unique(np.round(np.linspace(0, len(rows) - 1, k)).astype(np.int64))
    return rows.iloc[positions]


def bands(table: pd.DataFrame, count: int, per_band: int) -> list[Band]:
    """``count`` percentile bands of the scored rows by their ``percentile`` column (module doc); rows without
    a percentile are in no band."""
    rows = scored(table)
    index = band_index(rows["percentile"].to_numpy(dtype=np.float64), count)
    out = []
    for k in range(count):
        members = rows[index == k]
        out.append(
            Band(
                k, 100.0 * k / count, 100.0 * (k + 1) / count, len(members), evenly_spaced(members, per_band)
            )
        )
    return out


def identity_samples(
    table: pd.DataFrame, identity: str | None, n: int, exclude: str | None = None
) -> pd.DataFrame:
    """Up to ``n`` scored rows of ``identity`` (not the row whose path is ``exclude``): rows not flagged as
    label noise first (when the table has ``label_noise``), then best quality first, ties by path; empty for a
    None identity."""
    return _Samples(table)(identity, n, exclude)


class _Samples:
    """:func:`identity_samples` for many identities of one table (the scored rows grouped once)."""

    def __init__(self, table: pd.DataFrame) -> None:
        ranked = scored(table)
        flagged = ranked["label_noise"].fillna(False).astype(bool) if "label_noise" in ranked else False
        ranked = ranked.assign(_flagged=flagged).sort_values(
            ["_flagged", "quality", "path"], ascending=[True, False, True], kind="stable"
        )
        ranked = ranked.drop(columns="_flagged")
        self.empty = table.iloc[0:0]
        self.by_identity = {k: v for k, v in ranked.groupby("identity", sort=False)}

    def __call__(self, identity: str | None, n: int, exclude: str | None = None) -> pd.DataFrame:
        rows = self.by_identity.get(identity) if identity is not None and n > 0 else None
        if rows is None:
            return self.empty
        return rows[rows["path"] != exclude].head(n)


def label_noise_groups(table: pd.DataFrame, samples: int, limit: int | None = None) -> list[Group]:
    """The flagged rows (``label_noise`` true), lowest CCS first (NaN last, ties by path), at most ``limit``,
    each with up to ``samples`` images of its own identity and of its ``nearest_identity``."""
    flagged = table[table["label_noise"].fillna(False).astype(bool)]
    flagged = flagged.sort_values(["ccs", "path"], na_position="last", kind="stable")
    if limit is not None:
        flagged = flagged.head(limit)
    sample = _Samples(table)
    groups = []
    for _, row in flagged.iterrows():
        nearest = _text(row.get("nearest_identity"))
        groups.append(
            Group(
                flagged.loc[[row.name]],
                {
                    "own": sample(row["identity"], samples, exclude=row["path"]),
                    "nearest": sample(nearest, samples),
                },
                identities=(row["identity"], nearest),
            )
        )
    return groups


def merge_groups(
    table: pd.DataFrame, merges: pd.DataFrame, samples: int, limit: int | None = None
) -> list[Group]:
    """The identity-merge suggestions (``identity_a``, ``identity_b``, optional ``cosine``), highest cosine first
    (ties by the identities), at most ``limit``, each with up to ``samples`` images of both identities."""
    sample = _Samples(table)
    groups = []
    for row in _pairs_in_order(merges, MERGE_COLUMNS, limit):
        a, b = _text(row["identity_a"]), _text(row["identity_b"])
        groups.append(
            Group(
                table.iloc[0:0],
                {"a": sample(a, samples), "b": sample(b, samples)},
                cosine=float(row.get(COSINE, np.nan)),
                identities=(a, b),
            )
        )
    return groups


def duplicate_pairs(table: pd.DataFrame, duplicates: pd.DataFrame, limit: int | None = None) -> list[Group]:
    """The near-duplicate pairs (``path_a``, ``path_b``, optional ``cosine``), highest cosine first (ties by the
    paths), at most ``limit``; each group's ``subjects`` are the two rows (a path missing from ``table`` is a
    row with only its path and status ``unknown``)."""
    by_path = table.set_index("path", drop=False)
    groups = []
    for row in _pairs_in_order(duplicates, DUPLICATE_COLUMNS, limit):
        paths = [str(row["path_a"]), str(row["path_b"])]
        subjects = pd.DataFrame(
            [
                by_path.loc[p].to_dict() if p in by_path.index else {"path": p, "status": "unknown"}
                for p in paths
            ]
        )
        identities = tuple(_text(v) for v in subjects.get("identity", pd.Series([None, None])))
        groups.append(Group(subjects, {}, cosine=float(row.get(COSINE, np.nan)), identities=identities))
    return groups


def _pairs_in_order(pairs: pd.DataFrame, columns: tuple[str, str], limit: int | None) -> list[pd.Series]:
    order = [*([COSINE] if COSINE in pairs else []), *columns]
    ascending = [*([False] if COSINE in pairs else []), True, True]
    ordered = pairs.sort_values(order, ascending=ascending, na_position="last", kind="stable")
    if limit is not None:
        ordered = ordered.head(limit)
    return [row for _, row in ordered.iterrows()]


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return str(value)
