"""Threshold table: what dropping the lowest-quality images does to verification, per drop fraction.

For each drop fraction f (default 1, 5, 10, 20, 30 %) of N images:

- ``quality_threshold`` = the quality of the image at position floor(f N) in ascending quality order; images
  scoring strictly below it are dropped, images equal to it are kept (so ties can make ``dropped_fraction``,
  the share really dropped, smaller than f). f = 0 drops nothing (threshold = the minimum).
- ``percentile_threshold`` = the same cut on the ``quality_percentile`` column when one is given (the smallest
  percentile among the kept images), else absent.
- ``fnmr`` = the share of the genuine pairs whose two images are both kept that fail verification at the fixed
  threshold tau: tau is set once on ALL impostor pairs before dropping (:func:`~froq_ray.evaluation.edc.
  fmr_threshold`: #{impostor s >= tau} / I <= FMR), so dropping never moves the operating point.
  ``genuine_pairs_kept`` says how many pairs that share is over (NaN FNMR when none is left).

Image-based (an image below the threshold takes all its pairs with it), unlike the EDC, which discards pairs by
their pair quality on a fine grid; this table answers "which threshold do I set and what does it buy".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .edc import DEFAULT_FMR, fmr_threshold

DROP_FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.30)


def threshold_table(
    quality: np.ndarray,
    pair_i: np.ndarray,
    pair_j: np.ndarray,
    similarity: np.ndarray,
    *,
    genuine: np.ndarray,
    percentile: np.ndarray | None = None,
    fractions: Sequence[float] = DROP_FRACTIONS,
    fmr: float = DEFAULT_FMR,
) -> pd.DataFrame:
    """One row per drop fraction (module doc): ``drop_fraction, quality_threshold, [percentile_threshold],
    dropped_fraction, genuine_pairs_kept, fnmr``; plus ``fmr`` and ``tau`` columns (the fixed operating point).

    ``quality`` (N,) finite per image; pairs as image indices ``pair_i``/``pair_j`` (P,) with their
    ``similarity`` and ``genuine`` flag; ``percentile`` (N,) optional. ``ValueError`` for a fraction outside
    [0, 1), non-finite qualities, misaligned inputs, or no impostor pair."""
    q = np.asarray(quality, dtype=np.float64)
    if not np.isfinite(q).all():
        raise ValueError(f"{int((~np.isfinite(q)).sum())} qualities are NaN or infinite")
    i, j = np.asarray(pair_i), np.asarray(pair_j)
    s, g = np.asarray(similarity, dtype=np.float64), np.asarray(genuine, dtype=bool)
    if not (i.shape == j.shape == s.shape == g.shape):
        raise ValueError("pair indices, similarities and genuine flags must align")
    if percentile is not None and np.shape(percentile) != q.shape:
        raise ValueError(f"{np.size(percentile)} percentiles for {q.size} images")
    tau = fmr_threshold(s[~g], fmr)
    ordered = np.sort(q)
    rows = []
    for f in fractions:
        if not 0.0 <= f < 1.0:
            raise ValueError(f"drop fractions must be in [0, 1), got {f}")
        t = ordered[int(np.floor(f * q.size))]
        kept = q >= t
        both = kept[i] & kept[j] & g
        row = {
            "drop_fraction": float(f),
            "quality_threshold": float(t),
            "dropped_fraction": float(1.0 - kept.mean()),
            "genuine_pairs_kept": int(both.sum()),
            "fnmr": float((s[both] < tau).mean()) if both.any() else float("nan"),
        }
        if percentile is not None:
            row["percentile_threshold"] = float(np.min(np.asarray(percentile, dtype=np.float64)[kept]))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["fmr"], table["tau"] = fmr, tau
    order = ["drop_fraction", "quality_threshold"] + (
        ["percentile_threshold"] if percentile is not None else []
    )
    return table[order + ["dropped_fraction", "genuine_pairs_kept", "fnmr", "fmr", "tau"]]


def pairs_of(
    embeddings: np.ndarray, identities: Sequence | np.ndarray, **pair_options
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity, genuine) of the pairs :func:`~froq_ray.evaluation.pairs.all_pairs_similarity` yields
    (the EDC's pairs, with the same ``pair_options``), concatenated."""
    from .pairs import all_pairs_similarity

    blocks = list(all_pairs_similarity(embeddings, identities, **pair_options))
    if not blocks:
        raise ValueError("no pairs")
    i, j, sim, genuine = (
        np.concatenate([getattr(b, k) for b in blocks]) for k in ("i", "j", "sim", "genuine")
    )
    return i, j, sim, genuine


def threshold_tables(
    embeddings: np.ndarray,
    identities: Sequence | np.ndarray,
    qualities: dict[str, np.ndarray],
    percentiles: dict[str, np.ndarray] | None = None,
    *,
    fmr: float = DEFAULT_FMR,
    fractions: Sequence[float] = DROP_FRACTIONS,
) -> pd.DataFrame:
    """:func:`threshold_table` of every quality column over the same pairs, stacked with a ``method`` column
    first; ``percentiles`` maps a quality column to its percentile column's values."""
    i, j, s, g = pairs_of(embeddings, identities)
    frames = []
    for name, quality in qualities.items():
        table = threshold_table(
            quality,
            i,
            j,
            s,
            genuine=g,
            percentile=(percentiles or {}).get(name),
            fractions=fractions,
            fmr=fmr,
        )
        table.insert(0, "method", name)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)
