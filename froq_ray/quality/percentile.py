"""Readable scores: a calibration set's quality distribution as 1,001 quantiles, and quality -> percentile.

The artifact stores ``Q_k = numpy.quantile(reference_quality, k / 1000)`` for k = 0..1000 (numpy's default
"linear" interpolation between order statistics), so ``Q_0`` is the reference set's minimum and ``Q_1000`` its
maximum. The percentile of a quality q (0-100, float32) is the share of the reference set scoring LOWER than q,
read off those quantiles:

- q < Q_0 -> 0; q > Q_1000 -> 100; NaN -> NaN.
- q equal to a stored quantile: 100 * k / 1000 for the FIRST (smallest) k with Q_k == q. Ties count as not
  lower, so a value that many reference images share gets the percentile where that plateau starts (the
  reference's minimum gets 0).
- Q_{k-1} < q < Q_k: linear interpolation between 100 (k-1) / 1000 and 100 k / 1000.

With 1,001 quantiles the result is within 0.1 (plus the interpolation between order statistics) of the
exact empirical share for any reference set.
"""

from __future__ import annotations

import numpy as np

QUANTILE_COUNT = 1001


def quality_quantiles(quality: np.ndarray, count: int = QUANTILE_COUNT) -> np.ndarray:
    """(count,) float64 quantiles of the finite values of ``quality`` at k / (count - 1), k = 0..count-1.

    ``ValueError`` when no value is finite or ``count < 2``."""
    values = np.asarray(quality, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite quality to take quantiles of")
    if count < 2:
        raise ValueError(f"need at least 2 quantiles, got {count}")
    return np.quantile(values, np.linspace(0.0, 1.0, count))


def quality_percentile(quality: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Percentile (0-100, float32, same shape as ``quality``) of each quality against stored ``quantiles``
    (non-decreasing, at evenly spaced probabilities from 0 to 1); rules in the module doc.
    ``ValueError`` when the quantiles are fewer than 2, not finite, or decreasing."""
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 1 or q.size < 2 or not np.isfinite(q).all() or np.any(np.diff(q) < 0):
        raise ValueError("quantiles must be at least 2 finite, non-decreasing values")
    x = np.asarray(quality, dtype=np.float64)
    step = 100.0 / (q.size - 1)
    k = np.searchsorted(q, x, side="left")  # first Q_k >= x
    inside = (k > 0) & (k < q.size)
    lo = q[np.clip(k - 1, 0, q.size - 1)]
    hi = q[np.clip(k, 0, q.size - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(hi > lo, (x - lo) / (hi - lo), 1.0)
    out = np.where(inside, (k - 1 + frac) * step, np.where(k == 0, 0.0, 100.0))
    out = np.where(np.isnan(x), np.nan, out)
    return out.astype(np.float32)
