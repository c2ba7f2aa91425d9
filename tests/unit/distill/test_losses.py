"""Distillation losses and the target scaler, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from froq_ray.distill.losses import (
    LossConfig,
    TargetScaler,
    correlation_loss,
    distill_loss,
    pairwise_ranking_loss,
    regression_loss,
)


def _batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, generator=g, dtype=torch.float64)
    pred = 0.6 * target + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return pred, target


# ------------------------------------------------------------------------------------------ config
def test_loss_config_defaults_and_validation():
    assert LossConfig() == LossConfig(regression="mse", rank="pairwise", rank_weight=1.0)
    assert LossConfig(rank="none", rank_weight=0).to_dict() == {
        "regression": "mse",
        "rank": "none",
        "rank_weight": 0,
    }
    for bad, word in (
        ({"regression": "l1"}, "loss.regression"),
        ({"rank": "listwise"}, "loss.rank"),
        ({"rank_weight": -1.0}, "rank_weight"),
        ({"rank_weight": float("nan")}, "rank_weight"),
    ):
        with pytest.raises(ValueError, match=word):
            LossConfig(**bad)
    with pytest.raises(ValueError, match=r"unknown loss option\(s\) \['margin'\]"):
        LossConfig.from_dict({"margin": 1.0})
    assert LossConfig.from_dict({"regression": "smooth_l1"}).regression == "smooth_l1"


# ------------------------------------------------------------------------------------------ scaler
def test_target_scaler_fits_finite_values_and_round_trips():
    values = np.array([1.0, 2.0, np.nan, 4.0, np.inf, 9.0])
    finite = np.array([1.0, 2.0, 4.0, 9.0])
    scaler = TargetScaler().fit(values)
    assert scaler.mean == pytest.approx(finite.mean()) and scaler.std == pytest.approx(finite.std())
    standard = scaler.transform(finite)
    assert standard.mean() == pytest.approx(0.0, abs=1e-12) and standard.std() == pytest.approx(1.0)
    np.testing.assert_allclose(scaler.inverse(standard), finite)
    tensor = scaler.transform(torch.tensor(finite, dtype=torch.float32))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.numpy(), standard, rtol=1e-6)
    again = TargetScaler.from_dict(scaler.to_dict())
    assert (again.mean, again.std) == (scaler.mean, scaler.std)


def test_target_scaler_errors():
    with pytest.raises(ValueError, match="all equal"):
        TargetScaler().fit([3.0, 3.0, np.nan])
    with pytest.raises(ValueError, match="none of the 2 targets is finite"):
        TargetScaler().fit([np.nan, np.inf])
    with pytest.raises(ValueError, match="not fitted"):
        TargetScaler().transform([1.0])
    with pytest.raises(ValueError, match="std > 0"):
        TargetScaler.from_dict({"mean": 0.0, "std": 0.0})
    with pytest.raises(ValueError, match="numeric 'mean' and 'std'"):
        TargetScaler.from_dict({"mean": 0.0})


# ------------------------------------------------------------------------------------------ terms
def test_regression_losses_match_hand_formulas():
    pred, target = _batch()
    p, t = pred.numpy(), target.numpy()
    assert float(regression_loss(pred, target, "mse")) == pytest.approx(np.mean((p - t) ** 2))
    d = np.abs(3 * p - t)  # scaled so some |d| exceed beta=1
    assert (d > 1).any() and (d < 1).any()
    smooth = np.where(d < 1, 0.5 * d**2, d - 0.5).mean()
    assert float(regression_loss(3 * pred, target, "smooth_l1")) == pytest.approx(smooth)
    with pytest.raises(ValueError, match="regression loss must be one of"):
        regression_loss(pred, target, "huber")
    with pytest.raises(ValueError, match="same shape"):
        regression_loss(pred, target[:-1])


def _pairwise_brute_force(p: list[float], t: list[float]) -> float:
    terms = [
        math.log1p(math.exp(-(p[i] - p[j]))) for i in range(len(p)) for j in range(len(p)) if t[i] - t[j] > 0
    ]
    return sum(terms) / len(terms)


def test_pairwise_ranking_loss_matches_a_python_loop():
    pred, target = _batch(9)
    target[3] = target[5]  # a tie: that pair is skipped both ways
    expected = _pairwise_brute_force(pred.tolist(), target.tolist())
    assert float(pairwise_ranking_loss(pred, target)) == pytest.approx(expected, rel=1e-12)
    # right order with wide margins -> near 0; reversed -> large
    ordered = target * 50
    assert float(pairwise_ranking_loss(ordered, target)) < 1e-3
    assert float(pairwise_ranking_loss(-ordered, target)) > 10


def test_pairwise_ranking_loss_without_pairs_is_zero_and_differentiable():
    for pred, target in (
        (torch.tensor([0.3], requires_grad=True), torch.tensor([1.0])),
        (torch.tensor([0.3, -1.0], requires_grad=True), torch.tensor([2.0, 2.0])),
    ):
        loss = pairwise_ranking_loss(pred, target)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_correlation_loss_is_one_minus_pearson():
    pred, target = _batch(20)
    r = pearsonr(pred.numpy(), target.numpy())[0]
    assert float(correlation_loss(pred, target)) == pytest.approx(1 - r, abs=1e-5)
    assert float(correlation_loss(2 * target + 1, target)) == pytest.approx(0.0, abs=1e-5)
    assert float(correlation_loss(-target, target)) == pytest.approx(2.0, abs=1e-5)


def test_correlation_loss_is_stable_for_a_constant_prediction():
    target = torch.randn(16, generator=torch.Generator().manual_seed(1))
    pred = torch.full((16,), 0.7, requires_grad=True)
    loss = correlation_loss(pred, target)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(1.0) and torch.isfinite(pred.grad).all()
    assert float(correlation_loss(torch.tensor([1.0]), torch.tensor([2.0]))) == 0.0


# ------------------------------------------------------------------------------------------ total
@pytest.mark.parametrize("rank", ["pairwise", "correlation", "none"])
@pytest.mark.parametrize("regression", ["mse", "smooth_l1"])
def test_distill_loss_combines_its_parts(rank, regression):
    pred, target = _batch(10)
    pred = pred.float().requires_grad_(True)
    target = target.float()
    cfg = LossConfig(regression=regression, rank=rank, rank_weight=0.5)
    total, parts = distill_loss(pred, target, cfg)
    reg = float(regression_loss(pred.detach(), target, regression))
    rank_value = {"pairwise": pairwise_ranking_loss, "correlation": correlation_loss}.get(rank)
    rank_part = 0.0 if rank_value is None else float(rank_value(pred.detach(), target))
    assert parts == pytest.approx({"regression": reg, "rank": rank_part, "total": reg + 0.5 * rank_part})
    assert float(total.detach()) == pytest.approx(parts["total"])
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_distill_loss_rejects_non_finite_targets():
    with pytest.raises(ValueError, match="targets must be finite"):
        distill_loss(torch.zeros(3), torch.tensor([0.0, float("nan"), 1.0]), LossConfig())
