"""Distillation losses: fit a student's standardised output to the teacher's standardised quality.

Targets are standardised with a :class:`TargetScaler` fitted on the training targets, so losses and learning
rates do not depend on the teacher's units. The loss is a regression term (``mse`` or ``smooth_l1``) plus,
weighted by ``rank_weight``, a ranking term, because what a quality score is used for is ordering images:

* ``pairwise``: RankNet's logistic loss, ``log(1 + exp(-(p_i - p_j)))`` averaged over every ordered pair of the
  batch whose teacher target says ``i`` is better than ``j`` (ties are skipped);
* ``correlation``: ``1 - Pearson(pred, target)`` over the batch;
* ``none``: regression only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REGRESSION_KINDS = ("mse", "smooth_l1")
RANK_KINDS = ("pairwise", "correlation", "none")


@dataclass(frozen=True)
class LossConfig:
    regression: str = "mse"
    rank: str = "pairwise"
    rank_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.regression not in REGRESSION_KINDS:
            raise ValueError(
                f"loss.regression must be one of {list(REGRESSION_KINDS)}, got {self.regression!r}"
            )
        if self.rank not in RANK_KINDS:
            raise ValueError(f"loss.rank must be one of {list(RANK_KINDS)}, got {self.rank!r}")
        weight = self.rank_weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(f"loss.rank_weight must be a finite number >= 0, got {weight!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LossConfig:
        """Like ``LossConfig(**data)`` but an unknown key is a ``ValueError`` naming the allowed keys."""
        data = dict(data or {})
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"unknown loss option(s) {unknown}; allowed: {allowed}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TargetScaler:
    """Standardise teacher qualities: ``(q - mean) / std`` with the mean and std of the training targets."""

    def __init__(self, mean: float | None = None, std: float | None = None) -> None:
        self.mean = mean
        self.std = std

    @property
    def fitted(self) -> bool:
        return self.mean is not None and self.std is not None

    def fit(self, values: Any) -> TargetScaler:
        """Fit on the finite entries of ``values`` (population std); returns ``self``."""
        array = np.asarray(values, dtype=np.float64).ravel()
        finite = array[np.isfinite(array)]
        if finite.size == 0:
            raise ValueError(f"cannot fit a target scaler: none of the {array.size} targets is finite")
        std = float(finite.std())
        if not std > 0:
            raise ValueError(
                f"cannot fit a target scaler: the {finite.size} finite targets are all equal ({finite[0]:g})"
            )
        self.mean, self.std = float(finite.mean()), std
        return self

    def params(self) -> tuple[float, float]:
        """``(mean, std)`` in teacher units; raises ``ValueError`` when the scaler is not fitted."""
        if self.mean is None or self.std is None:
            raise ValueError("target scaler is not fitted (call fit first)")
        return self.mean, self.std

    def transform(self, values: Any) -> Any:
        """Teacher units -> standardised (tensors stay tensors, anything else becomes a float64 array)."""
        mean, std = self.params()
        if isinstance(values, torch.Tensor):
            return (values - mean) / std
        return (np.asarray(values, dtype=np.float64) - mean) / std

    def inverse(self, values: Any) -> Any:
        """Standardised -> teacher units."""
        mean, std = self.params()
        if isinstance(values, torch.Tensor):
            return values * std + mean
        return np.asarray(values, dtype=np.float64) * std + mean

    def to_dict(self) -> dict[str, float]:
        mean, std = self.params()
        return {"mean": mean, "std": std}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetScaler:
        try:
            mean, std = float(data["mean"]), float(data["std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"target scaler needs numeric 'mean' and 'std', got {data!r}") from exc
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            raise ValueError(f"target scaler needs a finite mean and a finite std > 0, got {data!r}")
        return cls(mean, std)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.dim() != 1 or pred.shape != target.shape:
        raise ValueError(
            f"losses take 1-d predictions and targets of the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    _check_pair(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=1.0)
    raise ValueError(f"regression loss must be one of {list(REGRESSION_KINDS)}, got {kind!r}")


def pairwise_ranking_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``softplus(-(p_i - p_j))`` over ordered pairs with ``t_i - t_j > 0``; 0 without such pairs."""
    _check_pair(pred, target)
    better = (target[:, None] - target[None, :]) > 0
    if not bool(better.any()):
        return pred.sum() * 0.0
    margins = pred[:, None] - pred[None, :]
    return F.softplus(-margins[better]).mean()


def correlation_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - Pearson(pred, target)``; ``eps`` is added to both variances so a constant batch stays finite."""
    _check_pair(pred, target)
    if pred.numel() < 2:
        return pred.sum() * 0.0
    p = pred - pred.mean()
    t = target - target.mean()
    covariance = (p * t).mean()
    r = covariance / torch.sqrt(((p * p).mean() + eps) * ((t * t).mean() + eps))
    return 1.0 - r


def distill_loss(
    pred_std: torch.Tensor, target_std: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss on standardised predictions/targets and its parts (``regression``, ``rank``, ``total``)."""
    _check_pair(pred_std, target_std)
    if not bool(torch.isfinite(target_std).all()):
        raise ValueError("distillation targets must be finite (drop rows without a teacher quality first)")
    target_std = target_std.to(pred_std.dtype)
    regression = regression_loss(pred_std, target_std, cfg.regression)
    if cfg.rank == "pairwise":
        rank = pairwise_ranking_loss(pred_std, target_std)
    elif cfg.rank == "correlation":
        rank = correlation_loss(pred_std, target_std)
    else:
        rank = None
    total = regression if rank is None else regression + cfg.rank_weight * rank
    parts = {
        "regression": float(regression.detach()),
        "rank": 0.0 if rank is None else float(rank.detach()),
        "total": float(total.detach()),
    }
    return total, parts
