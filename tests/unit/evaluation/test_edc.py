"""EDC / pAUC: hand-worked cases, and the fast paths against a direct implementation of the definitions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from froq_ray.evaluation.edc import EdcOptions, edc, fmr_threshold, pair_quality, partial_area

# ------------------------------------------------------------------------------------------ a hand-built case
# pair:       p0    p1    p2    p3    p4    p5    p6    p7    p8    p9
GEN = np.array([1, 0, 1, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
SIM = np.array([0.30, 0.75, 0.90, 0.20, 0.58, 0.60, 0.10, 0.85, 0.40, 0.55])
QUAL = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
# FMR target 0.2 over 6 impostors: k = floor(1.2) = 1 impostor may pass, so tau sits just above the 2nd largest
# impostor score 0.60. False non-matches at d=0: p0 (0.30) and p4 (0.58): FNMR(0) = 2/4.
# Removal order (Q ascending): p0 (G, fails), p1 (I, 0.75), p2 (G, passes), ...
# fixed tau:      m=1 -> {p2,p4,p7}: 1/3;  m=2 -> 1/3;  m=3 -> {p4,p7}: 1/2
# recomputed tau: m=2 drops impostor 0.75, 5 kept, k=1 -> tau above 0.55, p4 passes: 0;  m=3 -> 0
FIXED = [1 / 2, 1 / 3, 1 / 3, 1 / 2]
RECOMPUTED = [1 / 2, 1 / 3, 0.0, 0.0]
HAND = {"fmr": 0.2, "step": 0.1, "limits": (0.2, 0.3)}


def test_threshold_and_counts_of_hand_case() -> None:
    res = edc(SIM, GEN, QUAL, **HAND)
    assert res.tau == np.nextafter(0.60, 1.0)
    assert res.fmr_at_tau == pytest.approx(1 / 6)
    assert (res.n_genuine, res.n_impostor) == (4, 6)
    assert res.fnmr0 == 0.5


def test_fixed_and_recomputed_curves_of_hand_case() -> None:
    fixed = edc(SIM, GEN, QUAL, threshold="fixed", **HAND)
    recomputed = edc(SIM, GEN, QUAL, threshold="recomputed", **HAND)
    assert fixed.discard == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert fixed.fnmr == pytest.approx(FIXED)
    assert recomputed.fnmr == pytest.approx(RECOMPUTED)
    assert set(fixed.thresholds.tolist()) == {np.nextafter(0.60, 1.0)}
    assert recomputed.thresholds[2] == np.nextafter(0.55, 1.0)


def test_pauc_of_hand_case() -> None:
    fixed = edc(SIM, GEN, QUAL, **HAND)
    # step: 0.1 * (1/2 + 1/3 + 1/3) = 7/60 on [0, 0.3]; 0.1 * (1/2 + 1/3) = 1/12 on [0, 0.2]
    assert fixed.pauc[0.3].raw == pytest.approx(7 / 60)
    assert fixed.pauc[0.3].normalised == pytest.approx((7 / 60) / (0.3 * 0.5))
    assert fixed.pauc[0.2].raw == pytest.approx(1 / 12)
    assert fixed.pauc[0.2].normalised == pytest.approx((1 / 12) / (0.2 * 0.5))
    # ideal max(0, 0.5 - d): 0.3*0.5 - 0.3^2/2 = 0.105 and 0.2*0.5 - 0.2^2/2 = 0.08
    assert fixed.pauc[0.3].above_ideal == pytest.approx(7 / 60 - 0.105)
    assert fixed.pauc[0.2].above_ideal == pytest.approx(1 / 12 - 0.08)
    trapezoid = edc(SIM, GEN, QUAL, integration="trapezoid", **HAND)
    assert trapezoid.pauc[0.2].raw == pytest.approx(0.1 * (1 / 2 + 1 / 3) / 2 + 0.1 * (1 / 3 + 1 / 3) / 2)
    recomputed = edc(SIM, GEN, QUAL, threshold="recomputed", **HAND)
    assert recomputed.pauc[0.3].normalised == pytest.approx((0.1 * (1 / 2 + 1 / 3)) / 0.15)


def test_default_grid_floors_the_cut() -> None:
    # 0.05 grid over 10 pairs: floor(d * 10) = 0, 0, 1, 1, 2, 2, 3 for d = 0, 0.05, ..., 0.3
    res = edc(SIM, GEN, QUAL, fmr=0.2)
    assert res.discard == pytest.approx(np.arange(7) * 0.05)
    assert res.fnmr == pytest.approx([FIXED[m] for m in (0, 0, 1, 1, 2, 2, 3)])
    # step integration: each point held for 0.05
    assert res.pauc[0.3].raw == pytest.approx(0.05 * sum(FIXED[m] for m in (0, 0, 1, 1, 2, 2)))


def test_exact_mode_on_hand_case() -> None:
    for mode, expected in (("fixed", FIXED), ("recomputed", RECOMPUTED)):
        res = edc(SIM, GEN, QUAL, fmr=0.2, threshold=mode, sampling="exact")
        assert res.discard == pytest.approx([0.0, 0.1, 0.2, 0.3])
        assert res.fnmr == pytest.approx(expected)


def test_tie_handling() -> None:
    q = QUAL.copy()
    q[1] = q[2] = 0.25  # p1 (impostor 0.75) and p2 (genuine 0.90) tie, p1 given first
    stable = edc(SIM, GEN, q, threshold="recomputed", **HAND)
    groups = edc(SIM, GEN, q, threshold="recomputed", ties="groups", **HAND)
    assert stable.fnmr == pytest.approx(RECOMPUTED)  # the exact cut at m=2 separates p1 from p2
    assert groups.fnmr == pytest.approx([1 / 2, 1 / 3, 1 / 3, 0.0])  # m=2 would split the tie: cut at 1
    # with p2 given before p1, the stable cut at m=2 drops p0 and p2 and keeps impostor 0.75:
    # kept genuine {p4, p7} at tau above 0.60 -> p4 fails -> 1/2; whole groups do not depend on the order
    swap = np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])
    stable_swapped = edc(SIM[swap], GEN[swap], q[swap], threshold="recomputed", **HAND)
    groups_swapped = edc(SIM[swap], GEN[swap], q[swap], threshold="recomputed", ties="groups", **HAND)
    assert stable_swapped.fnmr[2] == pytest.approx(1 / 2)
    assert groups_swapped.fnmr == pytest.approx(groups.fnmr)


# ---------------------------------------------------------------------------------------------- thresholds


def test_fmr_threshold_rejects_impostor_ties() -> None:
    imp = np.array([0.9, 0.8, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    tau = fmr_threshold(imp, 0.2)  # k = 2, the 3rd largest is 0.8: all three 0.8 are rejected
    assert tau == np.nextafter(0.8, 1.0)
    assert np.mean(imp >= tau) == pytest.approx(0.1)
    assert np.mean(imp >= np.nextafter(tau, -1.0)) > 0.2  # tau is the smallest float that meets the target


def test_fmr_threshold_reads_the_target_as_a_decimal() -> None:
    imp = np.arange(100, dtype=np.float64)  # 0.29 * 100 = 28.999999999999996 in binary floating point
    tau = fmr_threshold(imp, 0.29)
    assert np.count_nonzero(imp >= tau) == 29
    assert fmr_threshold(np.arange(1000.0), 1e-3) == np.nextafter(998.0, np.inf)
    assert fmr_threshold(imp, 1.0) == -np.inf


def test_pair_quality_is_the_minimum() -> None:
    q = np.array([0.5, 0.1, 0.9])
    assert pair_quality(q, np.array([0, 0, 1]), np.array([1, 2, 2])).tolist() == [0.1, 0.5, 0.1]


def test_partial_area_holds_the_last_value() -> None:
    d = np.array([0.0, 0.1])
    f = np.array([0.4, 0.2])
    assert partial_area(d, f, 0.3, "step") == pytest.approx(0.04 + 0.2 * 0.2)
    assert partial_area(d, f, 0.3, "trapezoid") == pytest.approx(0.1 * 0.3 + 0.2 * 0.2)


# ------------------------------------------------------------------------ fast paths vs direct definitions


def _brute_fnmr(sim, gen, qual, fmr: float, m: int, recompute: bool) -> float:
    """The protocol written out literally, for one cut."""
    order = sorted(range(len(sim)), key=lambda p: qual[p])  # Python's sort is stable
    kept = order[m:]
    impostors = sorted((sim[p] for p in (kept if recompute else order) if not gen[p]), reverse=True)
    k = int(Fraction(fmr).limit_denominator(10**6) * len(impostors))
    tau = np.nextafter(impostors[k], np.inf) if k < len(impostors) else -np.inf
    kept_gen = [sim[p] for p in kept if gen[p]]
    return sum(s < tau for s in kept_gen) / len(kept_gen)


def _random_pairs(n: int, p_gen: float, seed: int, rounding: int | None = 3):
    rng = np.random.default_rng(seed)
    gen = rng.random(n) < p_gen
    sim = rng.normal(np.where(gen, 0.5, 0.0), 0.2)
    qual = rng.random(n) + 0.3 * gen * (sim > 0.45)
    if rounding is not None:  # ties in quality and in scores
        sim, qual = np.round(sim, rounding), np.round(qual, 2)
    return sim, gen, qual


@pytest.mark.parametrize("mode", ["fixed", "recomputed"])
def test_exact_mode_equals_brute_force_at_every_cut(mode: str) -> None:
    sim, gen, qual = _random_pairs(400, 0.3, seed=1)
    res = edc(sim, gen, qual, fmr=0.02, threshold=mode, sampling="exact")
    assert res.discard.size == 121
    expected = [
        _brute_fnmr(sim.tolist(), gen.tolist(), qual.tolist(), 0.02, m, mode == "recomputed")
        for m in range(121)
    ]
    assert res.fnmr == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("mode", ["fixed", "recomputed"])
def test_exact_mode_agrees_with_grid_at_grid_points(mode: str) -> None:
    sim, gen, qual = _random_pairs(40_000, 0.2, seed=2, rounding=None)  # > 2 counting chunks before the cut
    exact = edc(sim, gen, qual, threshold=mode, sampling="exact")
    grid = edc(sim, gen, qual, threshold=mode)
    at_grid = np.floor(grid.discard * 40_000 + 1e-9).astype(int)
    assert exact.fnmr[at_grid] == pytest.approx(grid.fnmr, abs=1e-15)
    assert exact.thresholds[at_grid] == pytest.approx(grid.thresholds, abs=0)
    for m in (1, 4095, 4096, 4097, 9001, 11_999, 12_000):
        assert exact.fnmr[m] == pytest.approx(
            _brute_fnmr(sim.tolist(), gen.tolist(), qual.tolist(), 1e-3, m, mode == "recomputed"), abs=1e-15
        )
    # step integration of the exact curve: sum of FNMR(m) / N over m < floor(0.3 N)
    assert exact.pauc[0.3].raw == pytest.approx(exact.fnmr[:12_000].sum() / 40_000)


def test_recomputed_exact_every_cut_with_a_partial_candidate_set() -> None:
    # 5,400 impostors at FMR 1e-3: k falls from 5 to 4 while 1,800 pairs are dropped, and only the ~1,000
    # highest impostors are candidates, so both kinds of threshold change are needed at every cut
    sim, gen, qual = _random_pairs(6000, 0.1, seed=6, rounding=None)
    res = edc(sim, gen, qual, fmr=1e-3, threshold="recomputed", sampling="exact")
    order = np.argsort(qual, kind="stable")
    s_sorted, g_sorted = sim[order], gen[order]
    expected = []
    for m in range(1801):
        imp = np.sort(s_sorted[m:][~g_sorted[m:]])[::-1]
        tau = np.nextafter(imp[imp.size // 1000], np.inf)
        expected.append(np.mean(s_sorted[m:][g_sorted[m:]] < tau))
    assert res.fnmr == pytest.approx(expected, abs=1e-15)


def test_recomputed_exact_when_the_top_impostors_go_first() -> None:
    # the 1,500 highest-scoring impostors have the lowest quality, so the candidate set must grow
    rng = np.random.default_rng(3)
    gen = np.r_[np.zeros(4000, bool), np.ones(1000, bool)]
    sim = np.r_[rng.normal(0.0, 0.2, 4000), rng.normal(0.5, 0.2, 1000)]
    qual = rng.random(5000) + 1.0
    top = np.argsort(-sim[:4000])[:1500]
    qual[top] = rng.random(1500)
    res = edc(sim, gen, qual, fmr=0.01, threshold="recomputed", sampling="exact")
    for m in (0, 500, 1000, 1499, 1500):
        assert res.fnmr[m] == pytest.approx(
            _brute_fnmr(sim.tolist(), gen.tolist(), qual.tolist(), 0.01, m, True), abs=1e-15
        )
    assert res.fnmr[1500] < res.fnmr[0]  # kept impostors are weaker: the recomputed threshold falls


def test_random_quality_is_near_one_and_informative_quality_is_below() -> None:
    sim, gen, _ = _random_pairs(200_000, 0.1, seed=4, rounding=None)
    random_q = np.random.default_rng(5).random(sim.size)
    res = edc(sim, gen, random_q)
    assert res.pauc[0.3].normalised == pytest.approx(1.0, abs=0.05)
    informed = edc(sim, gen, np.where(gen, sim, 1.0))  # genuine pairs ordered by their own score
    assert informed.pauc[0.3].normalised < 0.5


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="both genuine and impostor"):
        edc(SIM, np.ones(10, bool), QUAL)
    with pytest.raises(ValueError, match="NaN"):
        edc(SIM, GEN, np.r_[QUAL[:-1], np.nan])
    with pytest.raises(ValueError, match="threshold must be one of"):
        edc(SIM, GEN, QUAL, threshold="sometimes")


def test_options_object_and_named_fields_give_the_same_curve() -> None:
    named = edc(SIM, GEN, QUAL, threshold="recomputed", **HAND)
    assert named.fnmr.tolist() == pytest.approx(RECOMPUTED)
    for opts in (
        EdcOptions(threshold="recomputed", **HAND),
        EdcOptions.of(EdcOptions(threshold="fixed", fmr=0.5), threshold="recomputed", **HAND),
    ):
        res = edc(SIM, GEN, QUAL, opts)
        assert (
            res.fnmr.tolist() == named.fnmr.tolist() and res.thresholds.tolist() == named.thresholds.tolist()
        )
        assert (res.threshold_mode, res.fmr_target, res.settings) == ("recomputed", 0.2, named.settings)
        assert res.pauc == named.pauc
    # a named field replaces the one of the options object
    assert (
        edc(SIM, GEN, QUAL, EdcOptions(**HAND), threshold="recomputed").fnmr.tolist() == named.fnmr.tolist()
    )
    assert EdcOptions().recompute is False and EdcOptions(threshold="recomputed").recompute is True


def test_options_refuse_unknown_names_and_bad_values() -> None:
    with pytest.raises(TypeError, match="thresold"):
        edc(SIM, GEN, QUAL, thresold="fixed")
    with pytest.raises(ValueError, match="ties must be one of"):
        EdcOptions(ties="random")
    with pytest.raises(ValueError, match="sampling must be one of"):
        EdcOptions.of(EdcOptions(), sampling="dense")
    with pytest.raises(ValueError, match=r"discard limits must lie in \(0, 1\]"):
        edc(SIM, GEN, QUAL, limits=(0.2, 1.5))


# ------------------------------------------------------------------------------- protocol table and plot


def _labelled_set(n: int = 60, seed: int = 7):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 10, size=n)
    centres = rng.normal(size=(10, 16))
    emb = centres[ids] + rng.normal(scale=1.2, size=(n, 16))
    qualities = {
        "random": rng.random(n),
        "tied": np.round(rng.random(n), 1),
        "norm": np.linalg.norm(emb, axis=1),
    }
    return emb, ids, qualities


def test_protocol_equals_edc_on_brute_force_pairs() -> None:
    from itertools import combinations

    from froq_ray.evaluation.protocol import compute_edc_curves, evaluate_quality_scores

    emb, ids, qualities = _labelled_set()
    pairs = list(combinations(range(len(ids)), 2))  # the row-major order of one diagonal tile
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = np.array([unit[a] @ unit[b] for a, b in pairs])
    gen = np.array([ids[a] == ids[b] for a, b in pairs])
    curves = compute_edc_curves(emb, ids, qualities, fmr=0.01, threshold="recomputed")
    table = evaluate_quality_scores(emb, ids, qualities, fmr=0.01, threshold="recomputed")
    assert table["method"].tolist() == list(qualities)
    rows = table.set_index("method")
    for name, q in qualities.items():
        pq = np.array([min(q[a], q[b]) for a, b in pairs])
        expected = edc(sim, gen, pq, fmr=0.01, threshold="recomputed")
        assert curves[name].fnmr == pytest.approx(expected.fnmr, abs=1e-12)
        assert (curves[name].n_genuine, curves[name].n_impostor) == (int(gen.sum()), int((~gen).sum()))
        assert rows.loc[name, "fnmr0"] == pytest.approx(expected.fnmr0)
        assert rows.loc[name, "tau"] == pytest.approx(expected.tau, abs=1e-12)
        assert rows.loc[name, "pauc@0.2"] == pytest.approx(expected.pauc[0.2].normalised)
        assert rows.loc[name, "pauc_raw@0.3"] == pytest.approx(expected.pauc[0.3].raw)
    assert list(table.columns[:7]) == [
        "method",
        "fnmr0",
        "tau",
        "n_genuine",
        "n_impostor",
        "pauc@0.2",
        "pauc@0.3",
    ]


def test_protocol_takes_the_options_object_like_the_named_fields() -> None:
    from froq_ray.evaluation.protocol import compute_edc_curves, evaluate_quality_scores

    emb, ids, qualities = _labelled_set()
    named = compute_edc_curves(emb, ids, qualities, 0.01, threshold="recomputed", ties="groups", step=0.1)
    opts = EdcOptions(fmr=0.01, threshold="recomputed", ties="groups", step=0.1)
    by_object = compute_edc_curves(emb, ids, qualities, options=opts)
    fmr_on_top = compute_edc_curves(
        emb,
        ids,
        qualities,
        0.01,
        options=EdcOptions(fmr=0.5, ties="groups", step=0.1),
        threshold="recomputed",
    )
    for curves in (by_object, fmr_on_top):
        for name in qualities:
            assert curves[name].fnmr.tolist() == named[name].fnmr.tolist()
            assert (curves[name].fmr_target, curves[name].ties, curves[name].settings["step"]) == (
                0.01,
                "groups",
                0.1,
            )
    table = evaluate_quality_scores(emb, ids, qualities, options=opts)
    assert table["pauc@0.2"].tolist() == [named[name].pauc[0.2].normalised for name in qualities]
    with pytest.raises(ValueError, match="integration must be one of"):
        compute_edc_curves(emb, ids, qualities, integration="simpson")
    with pytest.raises(TypeError, match="limit"):
        compute_edc_curves(emb, ids, qualities, limit=(0.2,))


def test_quality_ranks_keep_order_and_ties() -> None:
    from froq_ray.evaluation.protocol import quality_ranks

    ranks = quality_ranks(np.array([0.5, 0.1, 0.5, 0.3]))
    assert ranks.tolist() == [2, 0, 2, 1] and ranks.dtype == np.uint16
    with pytest.raises(ValueError, match="tied: 1 qualities are NaN"):
        quality_ranks(np.array([0.1, np.nan]), "tied")


def test_protocol_with_sampled_impostors() -> None:
    from froq_ray.evaluation.protocol import evaluate_quality_scores

    emb, ids, qualities = _labelled_set(n=120)
    table = evaluate_quality_scores(
        emb, ids, qualities, fmr=0.01, impostors="sample", n_impostors=3000, seed=3
    )
    assert (table["n_impostor"] == 3000).all()
    assert table["fnmr0"].nunique() == 1  # the fixed threshold does not depend on the method


def test_markdown_table_and_plot(tmp_path) -> None:
    from PIL import Image

    from froq_ray.evaluation.plot import plot_edc
    from froq_ray.evaluation.protocol import compute_edc_curves, edc_markdown_table, results_table

    emb, ids, qualities = _labelled_set()
    curves = compute_edc_curves(emb, ids, qualities, fmr=0.01)
    text = edc_markdown_table(results_table(curves))
    lines = text.strip().split("\n")
    assert lines[0].startswith("| Method | FNMR(0) | tau | genuine pairs | impostor pairs | pAUC@0.2 (norm.)")
    assert len(lines) == 2 + 3 and lines[2].startswith("| random | ")
    n_gen = curves["random"].n_genuine
    assert f"| {n_gen:,} |" in lines[2]
    path = plot_edc(curves, tmp_path / "sub" / "edc.png", title="toy")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (1050, 720)
