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
from .pairs import CollectedPairs

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


def results_fmr(results: Mapping[str, EdcResult]) -> float:
    """The target FMR shared by the methods (ValueError when they differ)."""
    targets = {res.fmr_target for res in results.values()}
    if len(targets) != 1:
        raise ValueError(f"the methods have different target FMRs: {sorted(targets)}")
    return targets.pop()


def pair_weights(counts: np.ndarray, id_a: np.ndarray, id_b: np.ndarray, genuine: np.ndarray) -> np.ndarray:
    """How often each pair counts in one replicate (int64, one per pair): ``c[a]`` for a genuine pair,
    ``c[a] * c[b]`` for an impostor pair (``counts``: one replicate's row of :func:`identity_counts`)."""
    ca = counts[id_a]
    return np.where(genuine, ca, ca * counts[id_b])


def _weighted_threshold(
    scores_desc: np.ndarray, weights_desc: np.ndarray, fmr: float, total: int | None = None
) -> float:
    """``fmr_threshold`` of the impostor list where score ``scores_desc[i]`` occurs ``weights_desc[i]`` times
    (scores in descending order): just above the (k+1)-th largest, k = floor(fmr * total weight). ``total``
    (the weight of all impostors) may be given when only the highest impostors are passed; raises
    ``_TooFew`` when those do not reach the (k+1)-th."""
    cum = np.cumsum(weights_desc, dtype=np.int64)
    total = (int(cum[-1]) if cum.size else 0) if total is None else total
    if total == 0:
        return -np.inf
    k = int(_floor_times(fmr, total))
    if k >= total:
        return -np.inf
    if not cum.size or cum[-1] < k + 1:
        raise _TooFew
    return float(np.nextafter(scores_desc[np.searchsorted(cum, k + 1, side="left")], np.inf))


class _TooFew(Exception):
    """The highest impostors passed to ``_weighted_threshold`` do not reach the (k+1)-th largest."""


def weighted_fnmr_curve(
    s_sorted: np.ndarray,
    g_sorted: np.ndarray,
    w_sorted: np.ndarray,
    discard: Sequence,
    *,
    fmr: float,
    threshold: str = "fixed",
    tau: float | None = None,
    impostor_desc: np.ndarray | None = None,
) -> np.ndarray:
    """FNMR at each discard fraction (``discard``: exact fractions, ascending) for pairs counted ``w_sorted``
    times, the pairs given in the stable ascending order of their pair quality (``s_sorted`` float64
    similarity, ``g_sorted`` bool genuine flag, ``w_sorted`` int weights, all in that order).

    ``tau``: the fixed threshold, computed from the weighted impostors when ``None``; ``impostor_desc``: the
    positions (in this order) of the impostors by descending similarity, computed when ``None`` and needed
    only when a threshold is computed here (pass it to reuse it). With all weights one this
    is exactly ``edc(..., sampling="grid", ties="stable")``'s FNMR. Returns float64 (len(discard),), NaN where
    no genuine pair is kept.
    """
    cum = np.cumsum(w_sorted, dtype=np.int64)
    total = int(cum[-1])
    cuts = [int(_floor_times(d, total)) for d in discard]
    gw = np.where(g_sorted, w_sorted, 0)
    fnmr = np.full(len(cuts), np.nan)
    imp_desc = impostor_desc
    if imp_desc is None and (threshold != "fixed" or tau is None):
        imp = np.flatnonzero(~g_sorted)
        imp_desc = imp[np.argsort(-s_sorted[imp], kind="stable")]
    if threshold == "fixed":
        if tau is None:
            assert imp_desc is not None
            tau = _weighted_threshold(s_sorted[imp_desc], w_sorted[imp_desc], fmr)
        fw = np.where(s_sorted < tau, gw, 0)
        gen_total, fnm_total = int(gw.sum()), int(fw.sum())
        prev, gen_before, fnm_before = 0, 0, 0
        for k, m in enumerate(cuts):
            j = int(np.searchsorted(cum, m, side="right"))  # pairs [0, j) wholly dropped
            gen_before += int(gw[prev:j].sum())
            fnm_before += int(fw[prev:j].sum())
            prev = j
            part = m - (int(cum[j - 1]) if j else 0)  # copies of pair j dropped
            kept_g = gen_total - gen_before - (part if j < w_sorted.size and g_sorted[j] else 0)
            kept_f = fnm_total - fnm_before - (part if j < w_sorted.size and fw[j] else 0)
            if kept_g > 0:
                fnmr[k] = kept_f / kept_g
        return fnmr
    assert imp_desc is not None
    for k, m in enumerate(cuts):
        j = int(np.searchsorted(cum, m, side="right"))
        kept = w_sorted.astype(np.int64)
        kept[:j] = 0
        if j < kept.size:
            kept[j] -= m - (int(cum[j - 1]) if j else 0)
        tau_m = _weighted_threshold(s_sorted[imp_desc], kept[imp_desc], fmr)
        gk = np.where(g_sorted, kept, 0)
        kept_g = int(gk.sum())
        if kept_g > 0:
            fnmr[k] = int(gk[s_sorted < tau_m].sum()) / kept_g
    return fnmr


def _fixed_tau(
    counts: np.ndarray,
    similarity: np.ndarray,
    impostor_desc: np.ndarray,
    imp_a: np.ndarray,
    imp_b: np.ndarray,
    total: int,
    fmr: float,
) -> float:
    """One replicate's fixed threshold from its weighted impostors (``impostor_desc``: impostor pair indices by
    descending similarity; ``imp_a``/``imp_b``: their identity codes in that order; ``total``: the replicate's
    impostor weight). Reads only the highest impostors, doubling how many until they reach the (k+1)-th."""
    k = int(_floor_times(fmr, total)) if total else 0
    top = min(impostor_desc.size, 4 * (k + 1) + 4096)
    while True:
        weights = counts[imp_a[:top]] * counts[imp_b[:top]]
        try:
            return _weighted_threshold(similarity[impostor_desc[:top]], weights, fmr, total)
        except _TooFew:
            top = min(impostor_desc.size, 2 * top)


def bootstrap_band(
    pairs: CollectedPairs, results: Mapping[str, EdcResult], *, replicates: int, seed: int = 0
) -> dict[str, EdcBand]:
    """The identity-bootstrap band of each method's EDC (see the module docstring).

    ``pairs``: the ``P`` pairs the results were computed on, with their identity codes
    (``collect_pairs(..., keep_identities=True)``): ``similarity`` float64 (P,), ``genuine`` bool (P,),
    ``pair_rank[name]`` (P,) any numeric (only the order matters), ``identity_a``/``identity_b`` int (P,)
    codes 0..n_identities-1 of each pair's images; ``results`` the methods' :class:`EdcResult` (grid sampling,
    stable ties: their options are used). Raises ValueError for ``replicates < 1``, pairs without identity
    codes, or a result that is not on a grid with stable ties. Per replicate and method: a few sequential
    passes over the pairs (the pairs in each method's order are prepared once).
    """
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if pairs.identity_a is None or pairs.identity_b is None:
        raise ValueError(
            "the bootstrap needs each pair's identity codes: collect the pairs with keep_identities"
        )
    similarity, genuine, pair_quality = pairs.similarity, pairs.genuine, pairs.pair_rank
    id_a, id_b, n_identities = pairs.identity_a, pairs.identity_b, pairs.n_identities
    for name, res in results.items():
        if res.sampling != "grid" or res.ties != "stable":
            raise ValueError(f"{name}: the bootstrap supports sampling='grid' with ties='stable' only")
        if res.threshold_mode not in THRESHOLD_MODES or res.integration not in INTEGRATIONS:
            raise ValueError(f"{name}: unknown threshold mode or integration")
    # counts as int32 while no product of two counts can overflow it (counts sum to n_identities)
    small = n_identities <= 46_340
    counts = identity_counts(n_identities, replicates, seed).astype(np.int32 if small else np.int64)
    code = np.int16 if n_identities <= 2**15 else np.int32
    imp = np.flatnonzero(~genuine)
    impostor_desc = imp[np.argsort(-similarity[imp], kind="stable")]
    imp_a, imp_b = id_a[impostor_desc].astype(code), id_b[impostor_desc].astype(code)
    # impostor pairs per identity pair: a replicate's impostor weight is then c @ M @ c (small K only)
    between = None
    if n_identities <= 2048:
        flat = id_a[imp].astype(np.int64) * n_identities + id_b[imp]
        between = np.bincount(flat, minlength=n_identities**2).reshape(n_identities, n_identities)
        del flat
    del imp
    in_order = {}
    for name in results:
        order = np.argsort(pair_quality[name], kind="stable")
        in_order[name] = (
            similarity[order],
            genuine[order],
            id_a[order].astype(code),
            id_b[order].astype(code),
        )
        del order
    recomputed_desc = {}
    for name, res in results.items():
        if (
            res.threshold_mode == "recomputed"
        ):  # impostor positions in the method's order, by score descending
            s_sorted, g_sorted = in_order[name][:2]
            imp_pos = np.flatnonzero(~g_sorted)
            recomputed_desc[name] = imp_pos[np.argsort(-s_sorted[imp_pos], kind="stable")]
    curves = {name: np.empty((replicates, res.discard.size)) for name, res in results.items()}
    for b in range(replicates):
        c = counts[b]
        c64 = c.astype(np.int64)
        total_impostor = (
            int(c64 @ between @ c64) if between is not None else int(np.dot(c64[imp_a], c64[imp_b]))
        )
        tau = None
        if any(res.threshold_mode == "fixed" for res in results.values()):
            tau = _fixed_tau(c, similarity, impostor_desc, imp_a, imp_b, total_impostor, results_fmr(results))
        for name, res in results.items():
            s_sorted, g_sorted, a_sorted, b_sorted = in_order[name]
            ca = c[a_sorted]
            w_sorted = np.where(g_sorted, ca, ca * c[b_sorted])
            grid = discard_grid(res.settings["step"], res.settings["limits"])
            curves[name][b] = weighted_fnmr_curve(
                s_sorted,
                g_sorted,
                w_sorted,
                grid,
                fmr=res.fmr_target,
                threshold=res.threshold_mode,
                tau=tau if res.threshold_mode == "fixed" else None,
                impostor_desc=recomputed_desc.get(name),
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
