"""Error-versus-Discard Characteristic (EDC) and its partial area (pAUC), as in docs/evaluation-protocol.md.

Definitions (all scores and thresholds in float64):

- Pair quality ``Q = min(q_a, q_b)`` (``pair_quality``). Pairs are sorted by ``Q`` ascending with a *stable*
  sort, so equal ``Q`` keep the order in which the pairs were given.
- Threshold at a target FMR ``t`` over ``I`` impostor scores: the largest number of impostors that may be
  accepted is ``k = floor(t * I)``; ``tau`` is the smallest float64 above the ``(k+1)``-th largest impostor
  score, i.e. the smallest representable score with ``FMR(tau) = #{impostor s >= tau} / I <= t``. Impostor
  ties at that score are therefore all rejected, so the achieved FMR may fall below ``t`` when ties straddle
  the cut. A genuine pair is a false non-match when ``s < tau``. With ``k >= I`` everything is accepted
  (``tau = -inf``). ``t`` and discard fractions are read as exact decimals (nearest fraction with
  denominator <= 10^6: 1e-3 is 1/1000, 0.05 is 1/20), so ``floor`` never suffers from binary rounding.
- ``threshold="fixed"`` (default, ISO/IEC 29794-1 style): ``tau`` from ALL pairs before any discarding.
  ``threshold="recomputed"`` (CR-FIQA's public code): ``tau`` from the impostors still kept at each step.
- Discarding a fraction ``d`` of ``N`` pairs drops the first ``floor(d * N)`` pairs of the sorted order,
  genuine and impostor alike; ``FNMR(d) = #{kept genuine with s < tau} / #{kept genuine}`` (NaN when no
  genuine pair is kept). ``ties="stable"`` (default) cuts exactly there; ``ties="groups"`` never splits a
  group of equal ``Q``: a group straddling the cut is kept whole, so fewer pairs may be dropped.
- ``sampling="grid"`` (default) evaluates ``d = 0, step, 2 step, ...`` up to the largest limit (the limits
  are added to the grid when they are not on it), each point directly in O(N) without sorting;
  ``sampling="exact"`` evaluates every removal ``d = m / N`` for ``m = 0 .. floor(L N)`` from cumulative
  counts after one O(N log N) stable sort (the recomputed threshold is tracked as piecewise constant).
- ``pAUC(L)`` integrates the curve over ``[0, L]``: ``integration="step"`` (default, used by the report
  tables) holds each point's FNMR constant until the next point (left-constant); ``"trapezoid"`` joins the
  points by straight lines. After the last point the curve is held constant up to ``L``.
  ``normalised = pAUC(L) / (L * FNMR(0))`` (1.0 is no better than random discarding; lower is better),
  ``above_ideal = pAUC(L) - area under max(0, FNMR(0) - d)`` on ``[0, L]`` (exact, continuous).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, overload

import numpy as np

THRESHOLD_MODES = ("fixed", "recomputed")
SAMPLINGS = ("grid", "exact")
TIE_MODES = ("stable", "groups")
INTEGRATIONS = ("step", "trapezoid")
DEFAULT_FMR = 1e-3
DEFAULT_STEP = 0.05
DEFAULT_LIMITS = (0.2, 0.3)
_MAX_DENOMINATOR = 10**6
_QUERY_CHUNK = 4096  # positions per chunk of the offline counting in the exact recomputed mode


@dataclass(frozen=True)
class EdcOptions:
    """How an EDC is computed (module docstring): ``fmr`` the target FMR ``t``, ``threshold``
    (``THRESHOLD_MODES``), ``sampling`` (``SAMPLINGS``), ``step`` the grid step of ``sampling="grid"`` (> 0),
    ``limits`` the pAUC discard limits, each in (0, 1], ``ties`` (``TIE_MODES``), ``integration``
    (``INTEGRATIONS``). ``ValueError`` on construction for a mode outside its set or a limit outside (0, 1]
    (a step <= 0 is refused where the grid is built)."""

    fmr: float = DEFAULT_FMR
    threshold: str = "fixed"
    sampling: str = "grid"
    step: float = DEFAULT_STEP
    limits: Sequence[float] = DEFAULT_LIMITS
    ties: str = "stable"
    integration: str = "step"

    def __post_init__(self) -> None:
        for value, allowed, name in (
            (self.threshold, THRESHOLD_MODES, "threshold"),
            (self.sampling, SAMPLINGS, "sampling"),
            (self.ties, TIE_MODES, "ties"),
            (self.integration, INTEGRATIONS, "integration"),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not self.limits or not all(0 < limit <= 1 for limit in self.limits):
            raise ValueError(f"discard limits must lie in (0, 1], got {self.limits}")

    @property
    def recompute(self) -> bool:
        """Whether tau is recomputed from the kept impostors at each point."""
        return self.threshold == "recomputed"

    @classmethod
    def of(cls, options: EdcOptions | None = None, **overrides: Any) -> EdcOptions:
        """``options`` (default: all defaults) with the named fields replaced (``fmr=..., ties=...``);
        ``TypeError`` for a name that is not a field, ``ValueError`` as on construction."""
        return replace(options or cls(), **overrides)


@dataclass(frozen=True)
class PaucValue:
    """Partial area under the EDC on [0, limit]."""

    limit: float
    raw: float
    normalised: float
    above_ideal: float


@dataclass
class EdcResult:
    """An EDC curve and its areas. ``tau`` and ``fmr_at_tau`` describe the threshold before discarding."""

    fnmr0: float
    tau: float
    fmr_at_tau: float
    n_genuine: int
    n_impostor: int
    discard: np.ndarray  # d of each curve point, ascending from 0
    fnmr: np.ndarray  # FNMR(d)
    thresholds: np.ndarray  # tau used at each point (constant when the threshold is fixed)
    pauc: dict[float, PaucValue]
    fmr_target: float = DEFAULT_FMR
    threshold_mode: str = "fixed"
    sampling: str = "grid"
    ties: str = "stable"
    integration: str = "step"
    settings: dict = field(default_factory=dict)
    ideal: np.ndarray | None = None  # FNMR(d) of the ideal discarder (ideal_fnmr), same points as ``fnmr``
    band: Any = None  # uncertainty.EdcBand when a bootstrap ran (set by protocol.compute_edc_curves)

    def pauc_normalised(self, limit: float) -> float:
        return self.pauc[limit].normalised


# ---------------------------------------------------------------------------------------------------- basics


def _fraction(x: float) -> Fraction:
    return Fraction(x).limit_denominator(_MAX_DENOMINATOR)


@overload
def _floor_times(x: float | Fraction, n: int) -> int: ...
@overload
def _floor_times(x: float | Fraction, n: np.ndarray) -> np.ndarray: ...
def _floor_times(x: float | Fraction, n: int | np.ndarray) -> int | np.ndarray:
    """floor(x * n) with x read as an exact decimal fraction; n may be an int64 array."""
    frac = x if isinstance(x, Fraction) else _fraction(x)
    return (n * frac.numerator) // frac.denominator


def pair_quality(qualities: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``min(q[i], q[j])`` for each pair."""
    q = np.asarray(qualities)
    return np.minimum(q[i], q[j])


def fmr_threshold(impostor_scores: np.ndarray, fmr: float = DEFAULT_FMR) -> float:
    """The smallest float64 ``tau`` with ``#{s >= tau} / I <= fmr`` (see the module docstring)."""
    return _threshold_in_place(np.array(impostor_scores, dtype=np.float64).reshape(-1), fmr)


def _threshold_in_place(scores: np.ndarray, fmr: float) -> float:
    """``fmr_threshold`` that reorders ``scores`` (a float64 array the caller owns) instead of copying it."""
    if scores.size == 0:
        raise ValueError("no impostor scores: the FMR threshold is undefined")
    k = _floor_times(fmr, scores.size)
    if k >= scores.size:
        return -np.inf
    scores.partition(scores.size - 1 - k)
    return float(np.nextafter(scores[scores.size - 1 - k], np.inf))  # just above the (k+1)-th largest


def _check_inputs(similarity, genuine, quality) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(similarity, dtype=np.float64).reshape(-1)
    g = np.asarray(genuine, dtype=bool).reshape(-1)
    q = np.asarray(quality).reshape(-1)
    if not (s.size == g.size == q.size):
        raise ValueError(f"lengths differ: similarity {s.size}, genuine {g.size}, pair quality {q.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("similarity contains NaN or infinite values")
    if q.dtype.kind == "f" and np.isnan(q).any():
        raise ValueError(f"pair quality contains {int(np.isnan(q).sum())} NaN values")
    if not g.any() or g.all():
        n_gen = int(g.sum())
        raise ValueError(
            f"the EDC needs both genuine and impostor pairs, got {n_gen} genuine and {g.size - n_gen} impostor"
        )
    return s, g, q


def discard_grid(step: float, limits: Sequence[float]) -> list[Fraction]:
    """0, step, 2 step, ... up to max(limits), plus the limits themselves, as exact fractions."""
    step_f = _fraction(step)
    if step_f <= 0:
        raise ValueError(f"step must be positive, got {step}")
    top = max(_fraction(limit) for limit in limits)
    points = {step_f * k for k in range(int(top / step_f) + 1)}
    points.update(_fraction(limit) for limit in limits)
    return sorted(points)


# -------------------------------------------------------------------------------------- FNMR along the order


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _prefix_counts(flags: np.ndarray, upto: int) -> np.ndarray:
    """c[m] = number of True among flags[:m], for m = 0 .. upto."""
    return np.r_[0, np.cumsum(flags[:upto], dtype=np.int64)]


def _fnmr_fixed(s_sorted: np.ndarray, g_sorted: np.ndarray, tau: float, cuts: np.ndarray) -> np.ndarray:
    """FNMR after dropping the first ``cuts[k]`` pairs, one threshold for all cuts."""
    top = int(cuts.max())
    false_non_match = g_sorted & (s_sorted < tau)
    kept_fnm = int(false_non_match.sum()) - _prefix_counts(false_non_match, top)[cuts]
    kept_gen = int(g_sorted.sum()) - _prefix_counts(g_sorted, top)[cuts]
    return _ratio(kept_fnm, kept_gen)


def _candidate_impostors(
    imp_pos: np.ndarray, imp_s: np.ndarray, k0: int, top_cut: int
) -> tuple[np.ndarray, np.ndarray]:
    """The R highest-scoring impostors (positions, scores; by score descending), R large enough that at every
    cut m <= top_cut at least k_m + 1 of them are still kept (or R = all impostors)."""
    n = imp_s.size
    r = min(n, 2 * (k0 + 1) + 1024)
    while True:
        top = np.argpartition(imp_s, n - r)[n - r :] if r < n else np.arange(n)
        if r == n or r - np.count_nonzero(imp_pos[top] < top_cut) >= k0 + 1:
            break
        r = min(n, 2 * r)
    top = top[np.argsort(-imp_s[top], kind="stable")]
    return imp_pos[top], imp_s[top]


def _segment_thresholds(
    s_sorted: np.ndarray, g_sorted: np.ndarray, fmr: float, top_cut: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recomputed thresholds for every cut m = 0 .. top_cut, as piecewise-constant segments.

    tau can only change at a cut where one of the candidate top impostors is dropped or where
    k_m = floor(fmr * kept impostors) changes. Returns (segment starts, tau per segment).
    """
    imp_pos = np.flatnonzero(~g_sorted)
    imp_s = s_sorted[imp_pos]
    m = np.arange(top_cut + 1)
    kept_imp = imp_pos.size - np.searchsorted(imp_pos, m, side="left")
    k_m = _floor_times(fmr, kept_imp)
    cand_pos, cand_s = _candidate_impostors(imp_pos, imp_s, int(k_m[0]), top_cut)
    changes = np.r_[0, cand_pos[cand_pos < top_cut] + 1, np.flatnonzero(np.diff(k_m)) + 1]
    starts = np.unique(changes)
    taus = np.empty(starts.size)
    for idx, a in enumerate(starts.tolist()):
        kept = np.flatnonzero(cand_pos >= a)
        k = int(k_m[a])
        taus[idx] = np.nextafter(cand_s[kept[k]], np.inf) if k < kept.size else -np.inf
    return starts, taus


def _genuine_below_before(
    s_sorted: np.ndarray, g_sorted: np.ndarray, cuts: np.ndarray, taus: np.ndarray
) -> np.ndarray:
    """For each query k: #{genuine pairs at positions < cuts[k] with s < taus[k]} (cuts ascending).

    Offline counting by chunks of positions: each full chunk keeps its genuine scores sorted and answers
    all later queries with one searchsorted; the partial chunk of each query is counted directly.
    """
    counts = np.zeros(cuts.size, dtype=np.int64)
    top = int(cuts.max()) if cuts.size else 0
    chunk_of_query = cuts // _QUERY_CHUNK
    for c0 in range(0, top, _QUERY_CHUNK):
        first = np.searchsorted(chunk_of_query, c0 // _QUERY_CHUNK, side="right")
        if first == cuts.size:
            break
        block = s_sorted[c0 : c0 + _QUERY_CHUNK][g_sorted[c0 : c0 + _QUERY_CHUNK]]
        counts[first:] += np.searchsorted(np.sort(block), taus[first:], side="left")
    for k, (cut, tau) in enumerate(zip(cuts.tolist(), taus.tolist(), strict=True)):
        c0 = (cut // _QUERY_CHUNK) * _QUERY_CHUNK
        counts[k] += np.count_nonzero(s_sorted[c0:cut][g_sorted[c0:cut]] < tau)
    return counts


def _fnmr_recomputed_every_cut(
    s_sorted: np.ndarray, g_sorted: np.ndarray, fmr: float, top_cut: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recomputed threshold at every cut m = 0 .. top_cut in O(N log N): (fnmr, tau) per cut.

    Within a segment [a, b) of constant tau, kept false non-matches at m are
    #{genuine s < tau} - #{genuine at positions < a with s < tau} - #{genuine in [a, m) with s < tau}.
    """
    starts, seg_taus = _segment_thresholds(s_sorted, g_sorted, fmr, top_cut)
    m = np.arange(top_cut + 1)
    seg = np.searchsorted(starts, m, side="right") - 1
    tau_m = seg_taus[seg]
    genuine_sorted_scores = np.sort(s_sorted[g_sorted])
    below_total = np.searchsorted(genuine_sorted_scores, seg_taus, side="left")
    below_before_start = _genuine_below_before(s_sorted, g_sorted, starts, seg_taus)
    own_flag = g_sorted[:top_cut] & (s_sorted[:top_cut] < tau_m[:top_cut])
    within = _prefix_counts(own_flag, top_cut)
    kept_fnm = below_total[seg] - below_before_start[seg] - (within - within[starts[seg]])
    kept_gen = genuine_sorted_scores.size - _prefix_counts(g_sorted, top_cut)
    return _ratio(kept_fnm, kept_gen), tau_m


def _dropped_on_grid(q: np.ndarray, cut_value, m: int, ties: str) -> np.ndarray:
    """Mask of the pairs a stable ascending sort by ``q`` puts in its first ``m`` places, found without sorting:
    everything below the m-th smallest value, plus the first of its ties in input order. With ``ties="groups"``
    the tie group that the cut would split is kept whole."""
    if m == 0:
        return np.zeros(q.size, dtype=bool)
    if m >= q.size:
        return np.ones(q.size, dtype=bool)
    dropped = q < cut_value
    if ties == "stable":
        need = m - int(np.count_nonzero(dropped))
        dropped[np.flatnonzero(q == cut_value)[:need]] = True
    return dropped


@dataclass(frozen=True)
class _Pairs:
    """The checked pairs of one EDC (``_check_inputs``) and ``tau0``, the threshold before discarding."""

    s: np.ndarray  # similarity, float64 (N,)
    g: np.ndarray  # genuine, bool (N,)
    q: np.ndarray  # pair quality, any numeric (N,)
    tau0: float


def _fnmr_on_grid(pairs: _Pairs, cuts: np.ndarray, options: EdcOptions) -> tuple[np.ndarray, np.ndarray]:
    """FNMR and tau at a few cuts, each evaluated directly in O(N) (one multi-k partition, no sort)."""
    s, g, q = pairs.s, pairs.g, pairs.q
    inside = np.unique(cuts[cuts < q.size])
    cut_values = np.partition(q, inside)[inside] if inside.size else np.zeros(0, q.dtype)
    fnmr = np.empty(cuts.size)
    taus = np.full(cuts.size, pairs.tau0)
    for k, m in enumerate(cuts.tolist()):
        value = cut_values[np.searchsorted(inside, m)] if m < q.size else None
        kept = ~_dropped_on_grid(q, value, m, options.ties)
        if options.recompute:
            kept_impostor = s[kept & ~g]
            taus[k] = _threshold_in_place(kept_impostor, options.fmr) if kept_impostor.size else -np.inf
        kept_genuine = s[kept & g]
        fnmr[k] = (
            np.count_nonzero(kept_genuine < taus[k]) / kept_genuine.size if kept_genuine.size else np.nan
        )
    return fnmr, taus


def _tie_group_cuts(q_sorted: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Move each cut back to the start of the tie group it would split."""
    inside = cuts < q_sorted.size
    out = cuts.copy()
    out[inside] = np.searchsorted(q_sorted, q_sorted[cuts[inside]], side="left")
    return out


def _fnmr_exact(pairs: _Pairs, cuts: np.ndarray, options: EdcOptions) -> tuple[np.ndarray, np.ndarray]:
    """FNMR and tau at every cut 0 .. max(cuts) from one stable sort and cumulative counts."""
    order = np.argsort(pairs.q, kind="stable")
    s_sorted, g_sorted = pairs.s[order], pairs.g[order]
    if options.ties == "groups":
        cuts = _tie_group_cuts(pairs.q[order], cuts)
    if not options.recompute:
        return _fnmr_fixed(s_sorted, g_sorted, pairs.tau0, cuts), np.full(cuts.size, pairs.tau0)
    every_fnmr, every_tau = _fnmr_recomputed_every_cut(s_sorted, g_sorted, options.fmr, int(cuts.max()))
    return every_fnmr[cuts], every_tau[cuts]


# ------------------------------------------------------------------------------------------------ the areas


def ideal_fnmr(n_genuine: int, n_false_non_match: int, n_impostor: int, removed: np.ndarray) -> np.ndarray:
    """FNMR after removing ``removed[k]`` pairs in the ideal order: the false non-matches first, then the
    impostors (highest similarity first), the genuine matches last.

    With ``G`` genuine pairs, ``F`` of them false non-matches at the threshold before discarding, ``I``
    impostors and ``m`` pairs removed: ``FNMR = max(0, F - m) / (G - min(m, F) - max(0, m - F - I))``, NaN when
    no genuine pair is kept. For ``m < F`` this is ``(F - m) / (G - m)``, then 0. In both threshold modes no
    order does better with a fixed threshold (a removal drops at most one false non-match). With a recomputed
    threshold it is the curve of that same order (no impostor is dropped while false non-matches remain, and
    dropping the highest impostors first never raises the threshold): a reference, not a bound, since dropping
    an impostor can lower the threshold past several genuine pairs. Returns float64 of ``removed``'s shape."""
    m = np.asarray(removed, dtype=np.int64)
    kept_fnm = np.maximum(0, n_false_non_match - m)
    kept_gen = (
        n_genuine - np.minimum(m, n_false_non_match) - np.maximum(0, m - n_false_non_match - n_impostor)
    )
    return _ratio(kept_fnm, kept_gen)


def _ideal_area(fnmr0: float, limit: float) -> float:
    """Integral of max(0, fnmr0 - d) over [0, limit]."""
    if fnmr0 >= limit:
        return limit * fnmr0 - limit * limit / 2.0
    return fnmr0 * fnmr0 / 2.0


def partial_area(discard: np.ndarray, fnmr: np.ndarray, limit: float, integration: str = "step") -> float:
    """Area under the curve (discard ascending from 0) on [0, limit]; held constant after the last point."""
    if integration not in INTEGRATIONS:
        raise ValueError(f"integration must be one of {INTEGRATIONS}, got {integration!r}")
    inside = discard <= limit
    d = np.r_[discard[inside], limit]
    f = np.r_[fnmr[inside], fnmr[inside][-1]]
    widths = np.diff(d)
    if integration == "step":
        return float(np.sum(f[:-1] * widths))
    return float(np.sum((f[:-1] + f[1:]) / 2.0 * widths))


def pauc_value(discard: np.ndarray, fnmr: np.ndarray, limit: float, integration: str = "step") -> PaucValue:
    raw = partial_area(discard, fnmr, limit, integration)
    fnmr0 = float(fnmr[0])
    normalised = raw / (limit * fnmr0) if fnmr0 > 0 else np.nan
    return PaucValue(float(limit), raw, float(normalised), raw - _ideal_area(fnmr0, limit))


# ----------------------------------------------------------------------------------------------- the EDC


def _cuts(n_pairs: int, sampling: str, step: float, limits: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(discard fractions, number of pairs dropped) at each curve point."""
    if sampling == "grid":
        grid = discard_grid(step, limits)
        return np.array([float(d) for d in grid]), np.array([_floor_times(d, n_pairs) for d in grid])
    top = int(_floor_times(max(_fraction(limit) for limit in limits), n_pairs))
    m = np.arange(top + 1)
    return m / n_pairs, m


def edc(
    similarity: np.ndarray,
    genuine: np.ndarray,
    quality: np.ndarray,
    options: EdcOptions | None = None,
    **overrides: Any,
) -> EdcResult:
    """The EDC of one quality method over all given pairs (``quality`` is the pair quality, e.g. min(q_a, q_b);
    any numeric type, only its order matters). See the module docstring for every convention.

    ``similarity`` float64-convertible (N,) finite, ``genuine`` bool (N,) with both genuine and impostor pairs,
    ``quality`` (N,) without NaN: otherwise ``ValueError``. How: ``options`` (:class:`EdcOptions`, default all
    defaults) with any of its fields given by name replacing it, e.g. ``edc(s, g, q, fmr=1e-2,
    threshold="recomputed")``; an unknown name is a ``TypeError``, a bad value a ``ValueError``."""
    opts = EdcOptions.of(options, **overrides)
    s, g, q = _check_inputs(similarity, genuine, quality)
    discard, cuts = _cuts(s.size, opts.sampling, opts.step, opts.limits)
    impostor_scores = s[~g]
    tau0 = _threshold_in_place(impostor_scores, opts.fmr)
    n_impostor = impostor_scores.size
    fmr_at_tau = np.count_nonzero(impostor_scores >= tau0) / n_impostor
    del impostor_scores
    evaluate = _fnmr_on_grid if opts.sampling == "grid" else _fnmr_exact
    fnmr, taus = evaluate(_Pairs(s, g, q, tau0), cuts, opts)
    n_genuine = int(g.sum())
    ideal = ideal_fnmr(n_genuine, int(np.count_nonzero(s[g] < tau0)), n_impostor, cuts)
    return EdcResult(
        fnmr0=float(fnmr[0]),
        tau=tau0,
        fmr_at_tau=float(fmr_at_tau),
        n_genuine=n_genuine,
        n_impostor=n_impostor,
        discard=discard,
        fnmr=fnmr,
        thresholds=taus,
        pauc={
            float(limit): pauc_value(discard, fnmr, float(limit), opts.integration) for limit in opts.limits
        },
        fmr_target=float(opts.fmr),
        threshold_mode=opts.threshold,
        sampling=opts.sampling,
        ties=opts.ties,
        integration=opts.integration,
        settings={"step": float(opts.step), "limits": [float(x) for x in opts.limits]},
        ideal=ideal,
    )
