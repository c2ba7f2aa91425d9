"""k-fold verification accuracy: threshold choice on hand-worked cases and against a brute-force scan."""

from __future__ import annotations

import math

import numpy as np
import pytest

from froq_ray.evaluation.verification import (
    accuracy_at,
    best_threshold,
    fixed_threshold_accuracy,
    kfold_accuracy,
)


def test_best_threshold_hand_case_with_a_tie() -> None:
    # ascending: 0.2 I, 0.3 I, 0.6 G, 0.7 I, 0.8 G, 0.9 G. Rejecting the k lowest values gives accuracies
    # 3/6, 4/6, 5/6, 4/6, 5/6, 4/6, 3/6: the best (5/6) at k=2 (cut 0.45) and k=4 (cut 0.75); lower median -> 0.45
    sim = np.array([0.9, 0.8, 0.6, 0.7, 0.3, 0.2])
    gen = np.array([True, True, True, False, False, False])
    threshold, acc = best_threshold(sim, gen)
    assert threshold == pytest.approx(0.45)
    assert acc == pytest.approx(5 / 6)


def test_best_threshold_extremes() -> None:
    thr, acc = best_threshold(np.array([0.5, 0.5]), np.array([True, True]))
    assert acc == 1.0 and thr < 0.5  # accept all
    thr, acc = best_threshold(np.array([0.5, 0.7]), np.array([False, False]))
    assert acc == 1.0 and thr > 0.7  # reject all


def test_best_threshold_matches_brute_force_scan() -> None:
    rng = np.random.default_rng(0)
    gen = rng.random(400) < 0.5
    sim = np.round(rng.normal(loc=np.where(gen, 0.6, 0.3), scale=0.15), 2)  # rounding makes ties
    threshold, acc = best_threshold(sim, gen)
    scan = np.linspace(sim.min() - 0.01, sim.max() + 0.01, 20001)
    brute = max(np.mean((sim >= t) == gen) for t in scan)
    assert acc == pytest.approx(brute)
    assert np.mean((sim >= threshold) == gen) == pytest.approx(acc)


def test_kfold_uses_the_other_folds() -> None:
    # fold 0: G 0.9, I 0.1; fold 1: G 0.6, I 0.4; fold 2: G 0.35, I 0.2 (worked out in the comments below)
    sim = np.array([0.9, 0.1, 0.6, 0.4, 0.35, 0.2])
    gen = np.array([True, False, True, False, True, False])
    folds = np.array([0, 0, 1, 1, 2, 2])
    res = kfold_accuracy(sim, gen, folds)
    # test 0: train {G .6 .35, I .4 .2} -> best cuts .275 and .5 tie at 3/4, lower median .275; fold 0 all right
    # test 1: train {G .9 .35, I .1 .2} -> .275; I .4 accepted -> 1/2
    # test 2: train {G .9 .6, I .1 .4} -> .5; G .35 rejected -> 1/2
    assert res.per_fold_threshold == pytest.approx([0.275, 0.275, 0.5])
    assert res.per_fold_acc == pytest.approx([1.0, 0.5, 0.5])
    assert res.mean_acc == pytest.approx(2 / 3)
    assert res.std_acc == pytest.approx(math.sqrt(1 / 18))
    assert res.folds == [0, 1, 2]


def test_fixed_threshold_on_negated_distance() -> None:
    dist = np.array([0.3, 0.7, 0.5, 0.65, 0.59, 0.61])
    gen = np.array([True, True, False, False, True, False])
    folds = np.array([1, 1, 2, 2, 3, 3])
    res = fixed_threshold_accuracy(-dist, gen, folds, -0.6)
    assert res.per_fold_acc == pytest.approx([0.5, 0.5, 1.0])
    assert res.per_fold_threshold == [-0.6] * 3
    assert accuracy_at(-dist, gen, -0.6) == pytest.approx(4 / 6)


def test_needs_two_folds_and_matching_lengths() -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_accuracy(np.array([0.1, 0.2]), np.array([True, False]), np.array([0, 0]))
    with pytest.raises(ValueError, match="3 values but genuine has 2"):
        kfold_accuracy(np.array([0.1, 0.2, 0.3]), np.array([True, False]), np.array([0, 1]))
