"""How much an EDC can be trusted: an identity bootstrap band, and a warning when the sample is too small.

**Bootstrap** (``bootstrap_band``). A replicate draws the ``K`` identities of the evaluation set ``K`` times
with replacement (seeded ``numpy.random.default_rng(seed)``; replicate ``b`` uses the ``b``-th draw, the same
draws for every method, so the bands of two methods are paired). An identity drawn ``c`` times enters the
replicate as ``c`` separate identities with the same images, so that, without building any new pair:

- a genuine pair of identity ``a`` counts ``c_a`` times;
- an impostor pair of identities ``a`` and ``b`` counts ``c_a * c_b`` times;
- pairs between two copies of one identity are not formed (they would compare an image with itself).

Each replicate is then evaluated exactly as ``edc`` evaluates the original pairs, on the pair list where each
pair is repeated as often as it counts (copies adjacent, in the stream order of the original pairs): the
threshold at the target FMR from all (``fixed``) or the kept (``recomputed``) weighted impostors, the cut
``floor(d * W)`` of the ``W`` weighted pairs in stable pair-quality order, the FNMR of the kept weighted
genuine pairs, step or trapezoid pAUC normalised by the replicate's own FNMR(0). The band is the 2.5th and
97.5th percentile over the replicates (``numpy.nanpercentile``, linear interpolation), per discard point and per
limit; replicates where a value is undefined (no kept genuine pair; FNMR(0) = 0 for the normalised pAUC) are
left out of that value's percentiles and counted.

**Small-sample warning** (``small_sample_warnings``): see docs/evaluation-protocol.md section 6.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .edc import INTEGRATIONS, THRESHOLD_MODES, EdcResult, _floor_times, discard_grid, partial_area

BAND = (2.5, 97.5)
"""Percentiles of the bootstrap band."""
MIN_FALSE_NON_MATCHES = 30
"""Fewer false non-matches before discarding than this -> warning (the rule of 30)."""
MIN_ACCEPTED_IMPOSTORS = 10
"""Fewer impostors accepted at the threshold (floor(FMR * impostors)) than this -> warning."""
MAX_BAND_WIDTH = 0.2
"""A bootstrap band of the normalised pAUC wider than this -> warning."""


@dataclass
class EdcBand:
    """The bootstrap band of one method's EDC.

    ``fnmr_lo``/``fnmr_hi``: float64 arrays, one value per discard point of the curve; ``pauc_lo``/
    ``pauc_hi``: normalised pAUC band per limit; ``undefined``: per limit, replicates left out (normalised pAUC
    undefined); ``replicates``: number of replicates; ``seed``: the seed of the identity draws."""

    fnmr_lo: np.ndarray
    fnmr_hi: np.ndarray
    pauc_lo: dict[float, float]
    pauc_hi: dict[float, float]
    undefined: dict[float, int]
    replicates: int
    seed: int


def identity_counts(n_identities: int, replicates: int, seed: int = 0) -> np.ndarray:
    """How often each identity is drawn in each replicate: int64 (replicates, n_identities), rows sum to
    ``n_identities`` (``K`` uniform draws with replacement per replicate, ``default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_identities, size=(replicates, n_identities))
    counts = np.zeros((replicates, n_identities), dtype=np.int64)
    np.add.at(counts, (np.arange(replicates)[:, None], draws), 1)
    return counts


def pair_weights(counts: np.ndarray, id_a: np.ndarray, id_b: np.ndarray, genuine: np.ndarray) -> np.ndarray:
    """How often each pair counts in one replicate (int64, one per pair): ``c[a]`` for a genuine pair,
    ``c[a] * c[b]`` for an impostor pair (``counts``: one replicate's row of :func:`identity_counts`)."""
    ca = counts[id_a]
    return np.where(genuine, ca, ca * counts[id_b])


def _weighted_threshold(scores_desc: np.ndarray, weights_desc: np.ndarray, fmr: float) -> float:
    """``fmr_threshold`` of the impostor list where score ``scores_desc[i]`` occurs ``weights_desc[i]`` times
    (scores in descending order): just above the (k+1)-th largest, k = floor(fmr * total weight)."""
    cum = np.cumsum(weights_desc)
    total = int(cum[-1]) if cum.size else 0
    if total == 0:
        return -np.inf
    k = int(_floor_times(fmr, total))
    if k >= total:
        return -np.inf
    return float(np.nextafter(scores_desc[np.searchsorted(cum, k + 1, side="left")], np.inf))


def weighted_fnmr_curve(
    similarity: np.ndarray,
    genuine: np.ndarray,
    order: np.ndarray,
    weights: np.ndarray,
    discard: Sequence,
    fmr: float,
    threshold: str = "fixed",
    impostor_desc: np.ndarray | None = None,
    sorted_pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """FNMR at each discard fraction (``discard``: exact fractions) for pairs counted ``weights`` times.

    ``order`` is the stable ascending order of the pair quality (``np.argsort(q, kind="stable")``);
    ``impostor_desc`` the impostor indices by descending similarity and ``sorted_pairs`` the pair
    (similarity, genuine) in ``order`` (each computed when not given; pass them to reuse them). With
    ``weights`` all ones this is exactly ``edc(..., sampling="grid", ties="stable")``'s FNMR. Returns float64
    (len(discard),), NaN where no genuine pair is kept.
    """
    if impostor_desc is None:
        imp = np.flatnonzero(~genuine)
        impostor_desc = imp[np.argsort(-similarity[imp], kind="stable")]
    imp_s = similarity[impostor_desc]
    s_sorted, g_sorted = sorted_pairs if sorted_pairs is not None else (similarity[order], genuine[order])
    w_sorted = weights[order]
    cum = np.cumsum(w_sorted)
    total = int(cum[-1])
    cuts = [int(_floor_times(d, total)) for d in discard]
    gw = np.where(g_sorted, w_sorted, 0)
    cum_g = np.cumsum(gw)
    fnmr = np.full(len(cuts), np.nan)
    tau = _weighted_threshold(imp_s, weights[impostor_desc], fmr) if threshold == "fixed" else None
    if tau is not None:
        fnm_w = np.where(g_sorted & (s_sorted < tau), w_sorted, 0)
        cum_f = np.cumsum(fnm_w)
    for k, m in enumerate(cuts):
        j = int(np.searchsorted(cum, m, side="right"))  # pairs [0, j) wholly dropped
        part = m - (int(cum[j - 1]) if j else 0)  # copies of pair j dropped
        if threshold == "fixed":
            kept_g = (
                int(cum_g[-1])
                - (int(cum_g[j - 1]) if j else 0)
                - (part if j < order.size and g_sorted[j] else 0)
            )
            dropped_f = (int(cum_f[j - 1]) if j else 0) + (part if j < order.size and fnm_w[j] else 0)
            kept_f = int(cum_f[-1]) - dropped_f
        else:
            kept = w_sorted.copy()
            kept[:j] = 0
            if j < order.size:
                kept[j] -= part
            kept_w = np.empty_like(kept)
            kept_w[order] = kept  # back to pair order
            tau_m = _weighted_threshold(imp_s, kept_w[impostor_desc], fmr)
            gk = np.where(g_sorted, kept, 0)
            kept_g = int(gk.sum())
            kept_f = int(gk[s_sorted < tau_m].sum())
        if kept_g > 0:
            fnmr[k] = kept_f / kept_g
    return fnmr


def bootstrap_band(
    similarity: np.ndarray,
    genuine: np.ndarray,
    pair_quality: Mapping[str, np.ndarray],
    id_a: np.ndarray,
    id_b: np.ndarray,
    n_identities: int,
    results: Mapping[str, EdcResult],
    replicates: int,
    seed: int = 0,
) -> dict[str, EdcBand]:
    """The identity-bootstrap band of each method's EDC (see the module docstring).

    ``similarity`` float64 (P,), ``genuine`` bool (P,), ``pair_quality[name]`` (P,) any numeric (only the order
    matters), ``id_a``/``id_b`` int (P,) identity codes 0..n_identities-1 of each pair's images, ``results``
    the methods' :class:`EdcResult` (grid sampling, stable ties: their options are used). Raises ValueError
    for ``replicates < 1`` or a result that is not on a grid with stable ties.
    """
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    for name, res in results.items():
        if res.sampling != "grid" or res.ties != "stable":
            raise ValueError(f"{name}: the bootstrap supports sampling='grid' with ties='stable' only")
        if res.threshold_mode not in THRESHOLD_MODES or res.integration not in INTEGRATIONS:
            raise ValueError(f"{name}: unknown threshold mode or integration")
    counts = identity_counts(n_identities, replicates, seed)
    imp = np.flatnonzero(~genuine)
    impostor_desc = imp[np.argsort(-similarity[imp], kind="stable")]
    orders = {name: np.argsort(pair_quality[name], kind="stable") for name in results}
    in_order = {name: (similarity[order], genuine[order]) for name, order in orders.items()}
    curves = {name: np.empty((replicates, res.discard.size)) for name, res in results.items()}
    for b in range(replicates):
        weights = pair_weights(counts[b], id_a, id_b, genuine)
        for name, res in results.items():
            grid = discard_grid(res.settings["step"], res.settings["limits"])
            curves[name][b] = weighted_fnmr_curve(
                similarity,
                genuine,
                orders[name],
                weights,
                grid,
                res.fmr_target,
                res.threshold_mode,
                impostor_desc,
                in_order[name],
            )
    bands = {}
    for name, res in results.items():
        fnmr = curves[name]
        lo, hi = _percentiles(fnmr)
        pauc_lo, pauc_hi, undefined = {}, {}, {}
        for limit in res.pauc:
            with np.errstate(invalid="ignore", divide="ignore"):
                values = np.array(
                    [
                        partial_area(res.discard, row, limit, res.integration) / (limit * row[0])
                        if row[0] > 0
                        else np.nan
                        for row in fnmr
                    ]
                )
            undefined[limit] = int(np.isnan(values).sum())
            pauc_lo[limit], pauc_hi[limit] = (float(v[0]) for v in _percentiles(values[:, None]))
        bands[name] = EdcBand(lo, hi, pauc_lo, pauc_hi, undefined, replicates, seed)
    return bands


def _percentiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) percentile arrays over axis 0, NaN where every replicate is NaN."""
    lo = np.full(values.shape[1], np.nan)
    hi = np.full(values.shape[1], np.nan)
    defined = ~np.all(np.isnan(values), axis=0)
    if defined.any():
        lo[defined], hi[defined] = np.nanpercentile(values[:, defined], BAND, axis=0)
    return lo, hi


def small_sample_warnings(name: str, result: EdcResult, band: EdcBand | None = None) -> list[str]:
    """One line per reason the pAUC of ``result`` means little (docs/evaluation-protocol.md section 6):
    fewer than :data:`MIN_FALSE_NON_MATCHES` false non-matches before discarding, fewer than
    :data:`MIN_ACCEPTED_IMPOSTORS` impostors accepted at the threshold, or a normalised-pAUC band wider than
    :data:`MAX_BAND_WIDTH`. Empty when none applies."""
    out = []
    n_fnm = int(round(result.fnmr0 * result.n_genuine))
    if n_fnm < MIN_FALSE_NON_MATCHES:
        out.append(
            f"{name}: only {n_fnm} false non-matches before discarding (fewer than {MIN_FALSE_NON_MATCHES}): "
            "the pAUC rests on too few errors to compare methods"
        )
    accepted = int(_floor_times(result.fmr_target, result.n_impostor))
    if accepted < MIN_ACCEPTED_IMPOSTORS:
        out.append(
            f"{name}: FMR {result.fmr_target:g} of {result.n_impostor} impostor pairs accepts only {accepted} "
            f"(fewer than {MIN_ACCEPTED_IMPOSTORS}): the threshold is poorly determined"
        )
    if band is not None:
        for limit in sorted(band.pauc_lo):
            width = band.pauc_hi[limit] - band.pauc_lo[limit]
            if not width <= MAX_BAND_WIDTH:  # NaN (no defined replicate) warns too
                out.append(
                    f"{name}: the 95% bootstrap band of pAUC@{limit:g} is [{band.pauc_lo[limit]:.3f}, "
                    f"{band.pauc_hi[limit]:.3f}], wider than {MAX_BAND_WIDTH:g}"
                )
    return out
