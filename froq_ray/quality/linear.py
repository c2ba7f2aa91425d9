"""The ``linear`` observer: a ridge-regressed weighted sum of standardised log layer norms.

For image i with per-layer output norms n_il (the same norms the greedy observer averages, see ``observer.py``):

    quality_i = intercept + sum_l w_l * (log(max(n_il, NORM_FLOOR)) - mean_l) / scale_l

- ``mean_l`` / ``scale_l``: mean and (population, ddof=0) standard deviation of log(norm) of layer l over the
  calibration images. Layers whose log norms are not finite on every calibration image, or are constant
  (scale 0), cannot be standardised and are left out (named in :attr:`LinearObserver.excluded`).
- ``w``: ridge regression of the target (pseudo-label, CR or genuine similarity) on the standardised log
  norms: w = argmin ||y - mean(y) - Z w||^2 + penalty * ||w||^2 = (Z'Z + penalty I)^-1 Z'(y - mean(y)),
  ``intercept`` = mean(y) (Z is centred, so the intercept is not penalised). The quality is therefore in the
  target's units.
- ``penalty``: chosen from :data:`PENALTIES` by identity-grouped K-fold cross-validation (no identity has
  images on both sides of a split; :func:`grouped_folds`): for each penalty, fit on K-1 folds (means, scales
  and intercept from those folds only), score the held-out fold by Spearman(prediction, target); the penalty
  with the highest mean held-out Spearman wins, ties going to the larger penalty (the simpler model).
- ``top_n`` (optional): only the ``top_n`` layers of highest utility (Spearman with the target) enter the fit.

Plain numpy (float64); no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NORM_FLOOR = 1e-30
"""Norms below this are clamped before the log (a zero norm would give -inf)."""
PENALTIES = tuple(float(10.0**k) for k in np.arange(-2.0, 5.01, 0.5))
"""The ridge penalties tried by cross-validation: 1e-2 .. 1e5, half a decade apart."""
DEFAULT_FOLDS = 5


def log_norms(norms: np.ndarray) -> np.ndarray:
    """log(max(norms, NORM_FLOOR)) in float64 (NaN stays NaN)."""
    return np.log(np.maximum(np.asarray(norms, dtype=np.float64), NORM_FLOOR))


def ridge_weights(z: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """(weights (L,), intercept) of the ridge fit of ``y`` (N,) on the standardised features ``z`` (N, L):
    closed form on the centred data, intercept not penalised (module doc). ``ValueError`` for a negative
    penalty or mismatched shapes."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if penalty < 0:
        raise ValueError(f"ridge penalty must be >= 0, got {penalty}")
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"features {z.shape} and target {y.shape} do not align")
    zc = z - z.mean(axis=0)
    intercept = float(y.mean())
    gram = zc.T @ zc + penalty * np.eye(z.shape[1])
    return np.linalg.solve(gram, zc.T @ (y - intercept)), intercept


def grouped_folds(groups: Sequence[Any] | np.ndarray, k: int = DEFAULT_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) per image, int64 (N,): every identity lies in exactly one fold.

    The distinct identities (sorted by their string form) are shuffled with ``seed`` and dealt to the folds
    round-robin, so folds differ by at most one identity. ``ValueError`` when there are fewer identities
    than folds, or ``k < 2``."""
    labels = np.asarray(groups, dtype=object).astype(str)
    names, inverse = np.unique(labels, return_inverse=True)
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    if names.size < k:
        raise ValueError(f"{k}-fold grouped cross-validation needs at least {k} identities, got {names.size}")
    order = np.random.default_rng(seed).permutation(names.size)
    fold_of_name = np.empty(names.size, dtype=np.int64)
    fold_of_name[order] = np.arange(names.size) % k
    return fold_of_name[inverse]


def standardise(logs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per column of log norms (N, L), float64; scale = population standard deviation."""
    return logs.mean(axis=0), logs.std(axis=0)


@dataclass(frozen=True)
class LinearObserver:
    """A fitted linear observer (module doc). ``layers``/``weights``/``means``/``scales`` align; ``cv`` maps
    each penalty tried (as text) to its mean held-out Spearman (None where undefined); ``excluded`` names the
    candidate layers that could not be standardised (or were not in the top-n) with the reason."""

    layers: list[str]
    weights: list[float]
    means: list[float]
    scales: list[float]
    intercept: float
    penalty: float
    folds: int
    cv: dict[str, float | None] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    top_n: int | None = None

    @property
    def scoring_layers(self) -> list[str]:
        """The layers with a non-zero weight, in ``layers`` order: the only ones a scorer needs to observe."""
        return [name for name, w in zip(self.layers, self.weights, strict=True) if w != 0.0]

    def predict(self, norms: np.ndarray) -> np.ndarray:
        """Quality (N,) float64 from raw norms (N, len(layers)) in ``layers`` order."""
        z = (log_norms(norms) - np.asarray(self.means)) / np.asarray(self.scales)
        return self.intercept + z @ np.asarray(self.weights, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "weights": [float(w) for w in self.weights],
            "means": [float(m) for m in self.means],
            "scales": [float(s) for s in self.scales],
            "intercept": float(self.intercept),
            "penalty": float(self.penalty),
            "folds": int(self.folds),
            "cv_spearman": {
                k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in self.cv.items()
            },
            "excluded": dict(self.excluded),
            "top_n": self.top_n,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearObserver:
        """Inverse of :meth:`to_dict`; ``ValueError`` naming the field when the lists do not align or a scale is
        not positive."""
        keys = ("layers", "weights", "means", "scales")
        for key in keys + ("intercept", "penalty", "folds"):
            if key not in data:
                raise ValueError(f"linear observer lacks {key!r}")
        lengths = {key: len(data[key]) for key in keys}
        if len(set(lengths.values())) != 1 or not data["layers"]:
            raise ValueError(
                f"linear observer: layers, weights, means and scales must align and be non-empty, got {lengths}"
            )
        if not all(isinstance(s, (int, float)) and s > 0 for s in data["scales"]):
            raise ValueError("linear observer: every scale must be a positive number")
        return cls(
            layers=[str(n) for n in data["layers"]],
            weights=[float(w) for w in data["weights"]],
            means=[float(m) for m in data["means"]],
            scales=[float(s) for s in data["scales"]],
            intercept=float(data["intercept"]),
            penalty=float(data["penalty"]),
            folds=int(data["folds"]),
            cv={
                k: (math.nan if v is None else float(v)) for k, v in dict(data.get("cv_spearman", {})).items()
            },
            excluded=dict(data.get("excluded", {})),
            top_n=data.get("top_n"),
        )


def usable_layers(layer_names: Sequence[str], logs: np.ndarray) -> tuple[list[int], dict[str, str]]:
    """(column indices that can be standardised, {excluded layer: reason}) for log norms (N, L)."""
    keep, excluded = [], {}
    for column, name in enumerate(layer_names):
        values = logs[:, column]
        if not np.isfinite(values).all():
            excluded[name] = "non-finite norms"
        elif values.max() == values.min():
            excluded[name] = "constant norms"
        else:
            keep.append(column)
    return keep, excluded


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from .calibration import spearman

    return spearman(x, y)


def fit_linear(
    layer_names: Sequence[str],
    norms: np.ndarray,
    target: np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    *,
    utilities: Mapping[str, float] | None = None,
    top_n: int | None = None,
    folds: int = DEFAULT_FOLDS,
    penalties: Sequence[float] = PENALTIES,
    seed: int = 0,
) -> LinearObserver:
    """Fit the linear observer (module doc) on raw norms (N, L) in ``layer_names`` order, a finite target (N,)
    and the images' identities ``groups`` (N,) for the grouped cross-validation.

    ``top_n`` needs ``utilities`` (layer -> Spearman with the target). ``ValueError`` when the inputs do not
    align, the target is not finite, no layer can be standardised, or there are fewer identities than folds.
    """
    norms = np.asarray(norms, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if norms.ndim != 2 or norms.shape != (y.size, len(layer_names)) or len(groups) != y.size:
        raise ValueError(
            f"norms {norms.shape}, target ({y.size},), {len(groups)} identities and {len(layer_names)} layers "
            "must align"
        )
    if not np.isfinite(y).all():
        raise ValueError("the linear observer's target must be finite on every calibration image")
    logs = log_norms(norms)
    keep, excluded = usable_layers(layer_names, logs)
    if top_n is not None:
        if utilities is None:
            raise ValueError("top_n needs the layer utilities")
        from .calibration import rank_layers

        top = set(rank_layers({layer_names[c]: utilities[layer_names[c]] for c in keep}, top_n))
        excluded.update({layer_names[c]: "not in the top-n" for c in keep if layer_names[c] not in top})
        keep = [c for c in keep if layer_names[c] in top]
    if not keep:
        raise ValueError("no candidate layer has finite, non-constant norms: nothing to fit")
    x = logs[:, keep]
    fold = grouped_folds(groups, folds, seed)
    cv: dict[str, float] = {}
    for penalty in penalties:
        scores = []
        for k in range(folds):
            train, test = fold != k, fold == k
            mean, scale = standardise(x[train])
            scale = np.where(scale > 0, scale, 1.0)  # a layer constant on the training folds: weight ~0
            w, b = ridge_weights((x[train] - mean) / scale, y[train], penalty)
            scores.append(_spearman(b + ((x[test] - mean) / scale) @ w, y[test]))
        finite = [s for s in scores if math.isfinite(s)]
        cv[repr(float(penalty))] = float(np.mean(finite)) if len(finite) == folds else math.nan
    ranked = [
        (score, float(p)) for p, score in zip(penalties, cv.values(), strict=True) if math.isfinite(score)
    ]
    if not ranked:
        raise ValueError("cross-validation gave no defined Spearman for any penalty (constant target?)")
    best = max(ranked)[1]  # highest score; among equal scores the larger penalty
    mean, scale = standardise(x)
    w, b = ridge_weights((x - mean) / scale, y, best)
    return LinearObserver(
        layers=[layer_names[c] for c in keep],
        weights=w.tolist(),
        means=mean.tolist(),
        scales=scale.tolist(),
        intercept=b,
        penalty=best,
        folds=folds,
        cv=dict[str, float | None](cv),  # NaN (no defined Spearman) is stored as JSON null
        excluded=excluded,
        top_n=top_n,
    )
