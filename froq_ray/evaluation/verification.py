"""Pair verification accuracy, LFW style: per fold, the threshold is the one that maximises accuracy on the
other folds; report the mean and (population) standard deviation of the per-fold test accuracies.

A pair is predicted genuine when its similarity is >= the threshold. For distances, pass the negated
distance and threshold (``-d >= -t`` is ``d <= t``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class VerificationResult:
    mean_acc: float
    std_acc: float
    per_fold_acc: list[float]
    per_fold_threshold: list[float]
    folds: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_arrays(similarity: np.ndarray, genuine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(similarity, dtype=np.float64).reshape(-1)
    g = np.asarray(genuine, dtype=bool).reshape(-1)
    if s.shape != g.shape:
        raise ValueError(f"similarity has {s.size} values but genuine has {g.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("similarity contains NaN or infinite values")
    return s, g


def accuracy_at(similarity: np.ndarray, genuine: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified correctly by ``similarity >= threshold``."""
    s, g = _as_arrays(similarity, genuine)
    if s.size == 0:
        raise ValueError("no pairs to score")
    return float(np.mean((s >= threshold) == g))


def best_threshold(similarity: np.ndarray, genuine: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises accuracy on these pairs, and that accuracy.

    Candidates are the midpoints between consecutive distinct scores, plus one value just below the lowest
    score (accept all) and one just above the highest (reject all): every distinct classification of the
    pairs is reached by exactly one candidate. When several candidates reach the best accuracy, the lower
    median of them (in ascending order) is returned, so a plateau is cut near its middle.
    """
    s, g = _as_arrays(similarity, genuine)
    if s.size == 0:
        raise ValueError("no pairs to choose a threshold on")
    values, inverse = np.unique(s, return_inverse=True)
    genuine_per_value = np.bincount(inverse, weights=g, minlength=values.size)
    impostor_per_value = np.bincount(inverse, weights=~g, minlength=values.size)
    # candidate k accepts the values[k:], i.e. rejects the k lowest distinct values (k = 0 .. K)
    rejected_genuine = np.r_[0.0, np.cumsum(genuine_per_value)]
    rejected_impostor = np.r_[0.0, np.cumsum(impostor_per_value)]
    accuracy = (g.sum() - rejected_genuine + rejected_impostor) / s.size
    candidates = np.r_[
        np.nextafter(values[0], -np.inf), (values[:-1] + values[1:]) / 2.0, np.nextafter(values[-1], np.inf)
    ]
    best = np.flatnonzero(accuracy == accuracy.max())
    k = int(best[(best.size - 1) // 2])
    return float(candidates[k]), float(accuracy[k])


def _fold_labels(folds: np.ndarray, n: int) -> tuple[np.ndarray, list[Any]]:
    f = np.asarray(folds).reshape(-1)
    if f.size != n:
        raise ValueError(f"folds has {f.size} labels but there are {n} pairs")
    labels = np.unique(f).tolist()
    if len(labels) < 2:
        raise ValueError(f"k-fold accuracy needs at least 2 folds, got {len(labels)}")
    return f, labels


def _summarise(per_fold_acc: list[float], thresholds: list[float], labels: list[Any]) -> VerificationResult:
    acc = np.asarray(per_fold_acc, dtype=np.float64)
    return VerificationResult(float(acc.mean()), float(acc.std()), per_fold_acc, thresholds, labels)


def kfold_accuracy(similarity: np.ndarray, genuine: np.ndarray, folds: np.ndarray) -> VerificationResult:
    """Per fold: threshold = ``best_threshold`` on all other folds, accuracy measured on this fold."""
    s, g = _as_arrays(similarity, genuine)
    f, labels = _fold_labels(folds, s.size)
    accs, thresholds = [], []
    for label in labels:
        test = f == label
        threshold, _ = best_threshold(s[~test], g[~test])
        thresholds.append(threshold)
        accs.append(accuracy_at(s[test], g[test], threshold))
    return _summarise(accs, thresholds, labels)


def fixed_threshold_accuracy(
    similarity: np.ndarray, genuine: np.ndarray, folds: np.ndarray, threshold: float
) -> VerificationResult:
    """Per-fold accuracy at one given threshold (e.g. dlib's distance 0.6, passed negated)."""
    s, g = _as_arrays(similarity, genuine)
    f, labels = _fold_labels(folds, s.size)
    accs = [accuracy_at(s[f == label], g[f == label], threshold) for label in labels]
    return _summarise(accs, [float(threshold)] * len(labels), labels)
