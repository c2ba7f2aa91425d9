"""The EDC's reference curves (ideal, random) and its identity-bootstrap band, against brute-force recounts:
the ideal formula against the EDC of the ideal order and against every order, random discarding averaged over
all orders, and the bootstrap replicates rebuilt by enumerating the identity copies pair by pair."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from froq_ray.evaluation.edc import edc, ideal_fnmr
from froq_ray.evaluation.protocol import collect_pairs, compute_edc_curves
from froq_ray.evaluation.uncertainty import (
    MAX_BAND_WIDTH,
    bootstrap_band,
    identity_counts,
    small_sample_warnings,
    weighted_fnmr_curve,
)


def pair_set(seed: int, n: int = 60, genuine_share: float = 0.3):
    rng = np.random.default_rng(seed)
    g = rng.random(n) < genuine_share
    s = np.where(g, rng.normal(0.4, 0.25, n), rng.normal(0.1, 0.2, n))
    return s, g, rng


def brute_fnmr(s, g, order, m: int, tau: float) -> float:
    kept = [p for p in order[m:] if g[p]]
    return sum(s[p] < tau for p in kept) / len(kept) if kept else float("nan")


def brute_tau(impostor_scores, fmr: Fraction) -> float:
    desc = sorted(impostor_scores, reverse=True)
    k = int(fmr * len(desc))
    return -np.inf if k >= len(desc) else float(np.nextafter(desc[k], np.inf))


# ------------------------------------------------------------------------------------------------ ideal


@pytest.mark.parametrize("threshold", ["fixed", "recomputed"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ideal_formula_is_the_edc_of_the_ideal_order(threshold, seed):
    s, g, _ = pair_set(seed)
    tau = brute_tau(s[~g].tolist(), Fraction(1, 10))
    fnm = g & (s < tau)
    imp_desc = sorted(np.flatnonzero(~g), key=lambda p: -s[p])
    order = [*np.flatnonzero(fnm), *imp_desc, *np.flatnonzero(g & ~fnm)]
    q = np.empty(s.size)
    q[order] = np.arange(s.size)  # the ideal order as a pair quality
    res = edc(s, g, q, fmr=0.1, threshold=threshold, sampling="exact", limits=(1.0,))
    m = np.arange(s.size + 1)
    expected = [brute_fnmr(s, g, order, k, tau) for k in m] if threshold == "fixed" else res.fnmr
    formula = ideal_fnmr(int(g.sum()), int(fnm.sum()), int((~g).sum()), m)
    np.testing.assert_array_equal(formula, res.fnmr)
    np.testing.assert_array_equal(formula, np.asarray(expected))
    assert np.isnan(formula[-1]) and formula[int(fnm.sum())] == 0.0 and fnm.sum() > 2


def test_no_order_beats_the_ideal_with_a_fixed_threshold():
    s, g, rng = pair_set(3, n=40)
    res0 = edc(s, g, np.zeros(s.size), fmr=0.1, sampling="exact", limits=(0.9,))
    ideal = ideal_fnmr(res0.n_genuine, round(res0.fnmr0 * res0.n_genuine), res0.n_impostor, np.arange(37))
    for _ in range(300):
        res = edc(s, g, rng.permutation(s.size), fmr=0.1, sampling="exact", limits=(0.9,))
        assert np.all(np.isnan(res.fnmr) | (res.fnmr >= ideal - 1e-15))


def test_grid_result_carries_the_ideal_at_its_points():
    s, g, _ = pair_set(4, n=200)
    res = edc(s, g, np.arange(200), fmr=0.1)
    n_fnm = int(np.count_nonzero(s[g] < res.tau))
    removed = [int(Fraction(d).limit_denominator(10**6) * 200) for d in res.discard]
    np.testing.assert_array_equal(
        res.ideal, ideal_fnmr(res.n_genuine, n_fnm, res.n_impostor, np.array(removed))
    )


# ----------------------------------------------------------------------------------------------- random


def test_random_discarding_averages_to_fnmr0_over_every_order():
    s = np.array([0.2, 0.9, 0.8, 0.1, 0.7, 0.3, 0.4])
    g = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)
    tau = brute_tau(s[~g].tolist(), Fraction(1, 4))  # k = 1: just above 0.4, so p0 (0.2) fails
    fnmr0 = Fraction(1, 3)
    for m in (1, 2):  # at most 2 of 3 genuine pairs dropped: always one kept
        values = [Fraction(*_counts(s, g, order[m:], tau)) for order in itertools.permutations(range(7))]
        assert sum(values) / len(values) == fnmr0


def _counts(s, g, kept, tau):
    gen = [p for p in kept if g[p]]
    return sum(s[p] < tau for p in gen), len(gen)


# -------------------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("threshold", ["fixed", "recomputed"])
def test_weighted_curve_is_the_edc_of_the_expanded_pair_list(threshold):
    s, g, rng = pair_set(5, n=50)
    q = rng.integers(0, 12, size=s.size)  # many ties: the stable order matters
    w = rng.integers(0, 4, size=s.size)
    grid = [Fraction(k, 20) for k in range(7)]
    order = np.argsort(q, kind="stable")
    got = weighted_fnmr_curve(s[order], g[order], w[order], grid, fmr=0.1, threshold=threshold)
    ones = weighted_fnmr_curve(
        s[order], g[order], np.ones(s.size, np.int64), grid, fmr=0.1, threshold=threshold
    )
    np.testing.assert_array_equal(ones, edc(s, g, q, fmr=0.1, threshold=threshold, step=0.05).fnmr)
    expanded = np.repeat(np.arange(s.size), w)  # copies adjacent, in pair order
    ref = edc(s[expanded], g[expanded], q[expanded], fmr=0.1, threshold=threshold, step=0.05)
    np.testing.assert_array_equal(got, ref.fnmr)


def brute_replicate_curve(emb, ids, qual, counts, labels, fmr, grid):
    """One bootstrap replicate rebuilt by enumerating identity copies: every original pair (i, j) in stream
    order, once per (copy of i's identity, copy of j's identity) that are different new identities or the same
    copy; stable sort by min quality; fixed threshold from the replicate's impostors."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    code = {name: k for k, name in enumerate(labels)}
    sim, gen, pq_ = [], [], []
    for i, j in itertools.combinations(range(len(ids)), 2):
        a, b = code[ids[i]], code[ids[j]]
        for ka in range(counts[a]):
            for kb in range(counts[b]):
                if a == b and ka != kb:
                    continue  # two copies of one identity: not a comparison
                sim.append(float(unit[i] @ unit[j]))
                gen.append(a == b)
                pq_.append(min(qual[i], qual[j]))
    tau = brute_tau([x for x, y in zip(sim, gen, strict=True) if not y], fmr)
    order = sorted(range(len(sim)), key=lambda p: pq_[p])
    return [brute_fnmr(sim, gen, order, int(d * len(sim)), tau) for d in grid]


def test_bootstrap_band_matches_replicates_rebuilt_by_enumeration():
    rng = np.random.default_rng(11)
    labels = ["Ada", "Bob", "Cy", "Dee", "Eve"]
    ids = [name for name in labels for _ in range(3)]
    centres = {name: rng.normal(size=6) for name in labels}
    emb = np.stack([centres[i] + 1.1 * rng.normal(size=6) for i in ids])
    qual = rng.permutation(15).astype(float)
    replicates = 25
    res = compute_edc_curves(emb, ids, {"q": qual}, 0.1, bootstrap=replicates, bootstrap_seed=3)["q"]
    counts = identity_counts(len(labels), replicates, seed=3)
    draws = np.random.default_rng(3).integers(0, len(labels), size=(replicates, len(labels)))
    np.testing.assert_array_equal(counts, [np.bincount(row, minlength=len(labels)) for row in draws])
    grid = [Fraction(k, 20) for k in range(7)]
    curves = np.array(
        [brute_replicate_curve(emb, ids, qual, c, labels, Fraction(1, 10), grid) for c in counts]
    )
    np.testing.assert_allclose(res.band.fnmr_lo, np.nanpercentile(curves, 2.5, axis=0), rtol=1e-12)
    np.testing.assert_allclose(res.band.fnmr_hi, np.nanpercentile(curves, 97.5, axis=0), rtol=1e-12)
    for limit in (0.2, 0.3):
        points = int(round(limit / 0.05))
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = 0.05 * np.nansum(curves[:, :points], axis=1) / (limit * curves[:, 0])
        norm[~(curves[:, 0] > 0)] = np.nan
        assert res.band.undefined[limit] == int(np.isnan(norm).sum())
        assert res.band.pauc_lo[limit] == pytest.approx(np.nanpercentile(norm, 2.5), rel=1e-12)
        assert res.band.pauc_hi[limit] == pytest.approx(np.nanpercentile(norm, 97.5), rel=1e-12)
        assert res.band.pauc_lo[limit] <= res.pauc[limit].normalised <= res.band.pauc_hi[limit]
    again = compute_edc_curves(emb, ids, {"q": qual}, 0.1, bootstrap=replicates, bootstrap_seed=3)["q"]
    np.testing.assert_array_equal(again.band.fnmr_lo, res.band.fnmr_lo)  # seeded


def test_bootstrap_band_needs_the_identity_codes_of_the_pairs():
    rng = np.random.default_rng(4)
    ids = [name for name in ("Ada", "Bob", "Cy") for _ in range(3)]
    emb = rng.normal(size=(9, 6))
    qualities = {"q": rng.random(9)}
    res = compute_edc_curves(emb, ids, qualities, 0.1)
    with pytest.raises(ValueError, match="identity codes: collect the pairs with keep_identities"):
        bootstrap_band(collect_pairs(emb, ids, qualities), res, replicates=5)
    kept = collect_pairs(emb, ids, qualities, keep_identities=True)
    assert kept.n_identities == 3 and kept.identity_a is not None and kept.identity_b is not None
    # identity codes in sorted-label order, one pair per (i < j), row-major
    pairs = list(itertools.combinations(range(9), 2))
    assert kept.identity_a.tolist() == [i // 3 for i, _ in pairs]
    assert kept.identity_b.tolist() == [j // 3 for _, j in pairs]
    band = bootstrap_band(kept, res, replicates=5, seed=2)["q"]
    assert band.replicates == 5 and band.seed == 2 and band.fnmr_lo.shape == res["q"].discard.shape


# --------------------------------------------------------------------------------------------- warnings


def test_small_sample_warnings_follow_the_rule():
    s, g, _ = pair_set(6)
    res = edc(s, g, np.arange(60), fmr=0.01)
    lines = small_sample_warnings("q", res)
    n_fnm = round(res.fnmr0 * res.n_genuine)
    assert n_fnm < 30 and f"q: only {n_fnm} false non-matches before discarding" in lines[0]
    accepted = int(0.01 * res.n_impostor)
    assert accepted < 10 and f"accepts only {accepted}" in lines[1]
    rng = np.random.default_rng(0)
    g = rng.random(20_000) < 0.5
    s = np.where(g, rng.normal(0.6, 0.2, g.size), rng.normal(0.1, 0.2, g.size))
    big = edc(s, g, rng.random(g.size), fmr=0.01)
    assert big.fnmr0 * big.n_genuine >= 30 and small_sample_warnings("q", big) == []


def test_a_wide_band_warns():
    rng = np.random.default_rng(2)
    labels = [f"id{k}" for k in range(6)]
    ids = [name for name in labels for _ in range(3)]
    centres = {name: rng.normal(size=6) for name in labels}
    emb = np.stack([centres[i] + 0.8 * rng.normal(size=6) for i in ids])
    res = compute_edc_curves(emb, ids, {"q": rng.random(18)}, 0.1, bootstrap=30)["q"]
    lo, hi = res.band.pauc_lo[0.3], res.band.pauc_hi[0.3]
    assert hi - lo > MAX_BAND_WIDTH
    expected = f"q: the 95% bootstrap band of pAUC@0.3 is [{lo:.3f}, {hi:.3f}], wider than 0.2"
    assert expected in small_sample_warnings("q", res, res.band)


def test_recomputed_band_matches_replicates_of_the_expanded_pair_list():
    rng = np.random.default_rng(12)
    labels = ["Ada", "Bob", "Cy", "Dee"]
    ids = [name for name in labels for _ in range(4)]
    centres = {name: rng.normal(size=6) for name in labels}
    emb = np.stack([centres[i] + 1.0 * rng.normal(size=6) for i in ids])
    qual = rng.integers(0, 5, size=16).astype(float)  # ties among pair qualities
    res = compute_edc_curves(
        emb, ids, {"q": qual}, 0.1, threshold="recomputed", bootstrap=12, bootstrap_seed=1
    )
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    pairs = list(itertools.combinations(range(16), 2))
    s = np.array([unit[i] @ unit[j] for i, j in pairs])
    g = np.array([ids[i] == ids[j] for i, j in pairs])
    q = np.array([min(qual[i], qual[j]) for i, j in pairs])
    code = np.array([labels.index(i) for i in ids])
    curves = []
    for c in identity_counts(4, 12, seed=1):
        w = np.array([c[code[i]] if g[k] else c[code[i]] * c[code[j]] for k, (i, j) in enumerate(pairs)])
        expanded = np.repeat(np.arange(len(pairs)), w)
        curves.append(edc(s[expanded], g[expanded], q[expanded], fmr=0.1, threshold="recomputed").fnmr)
    np.testing.assert_allclose(res["q"].band.fnmr_lo, np.nanpercentile(curves, 2.5, axis=0), rtol=1e-12)
    np.testing.assert_allclose(res["q"].band.fnmr_hi, np.nanpercentile(curves, 97.5, axis=0), rtol=1e-12)
