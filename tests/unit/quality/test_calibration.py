"""Calibration: Spearman vs scipy, greedy vs brute force, observation unit and the plain-loop driver."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from froq_ray.pipeline.artifacts import write_artifact
from froq_ray.quality.artifact import load_artifact
from froq_ray.quality.calibration import (
    NORMS_KEY,
    average_ranks,
    calibrate,
    calibration_layers,
    greedy_selection,
    layer_utilities,
    observe_calibration_batch,
    rank_layers,
    spearman,
)
from froq_ray.quality.observer import NormObserver, candidate_layers, network_input
from froq_ray.quality.perturbations import PerturbationSettings, PseudoLabeler
from tests.tiny_models import random_crops, tiny_fr_model

SETTINGS = PerturbationSettings(noise_masks=2, noise_alphas=(0.05,), occlusion_cell=8, max_forward_batch=64)


def scipy_rho(x, y) -> float:
    return float(spearmanr(x, y)[0])


# ------------------------------------------------------------------------------------------------ spearman
@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=50).astype(np.float32)  # many ties
    y = x + rng.integers(0, 4, size=50)
    np.testing.assert_allclose(average_ranks(x), rankdata(x, method="average"))
    assert spearman(x, y) == pytest.approx(scipy_rho(x, y), abs=1e-12)
    z = rng.normal(size=50)
    assert spearman(z, y) == pytest.approx(scipy_rho(z, y), abs=1e-12)


def test_spearman_undefined_cases_are_nan():
    assert math.isnan(spearman(np.ones(10), np.arange(10)))
    assert math.isnan(spearman(np.array([1.0, np.inf, 2.0]), np.arange(3)))
    assert math.isnan(spearman(np.array([1.0, np.nan, 2.0]), np.arange(3)))
    assert math.isnan(spearman(np.array([1.0]), np.array([2.0])))
    assert spearman(np.arange(5), -np.arange(5)) == -1.0


# ------------------------------------------------------------------------------------------------- greedy
def random_layers(seed: int, n_layers: int = 7, n: int = 40):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=n)
    norms = {
        f"l{i}": target * rng.uniform(-0.5, 1.5) + rng.normal(size=n) * rng.uniform(0.3, 2)
        for i in range(n_layers)
    }
    norms["l3"] = np.round(norms["l3"])  # ties inside a layer
    return norms, target


@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_stepwise_bruteforce_argmax(seed):
    norms, target = random_layers(seed)
    result = greedy_selection(norms, target, top_n=5)
    utilities = {name: scipy_rho(v, target) for name, v in norms.items()}
    expected_top = sorted(utilities, key=lambda n: -utilities[n])[:5]
    assert result.top_layers == expected_top
    members, remaining = [], list(expected_top)
    for step, (added, rho) in enumerate(result.curve):
        # brute force: every remaining top layer, scipy Spearman of the mean of raw norms
        trials = {c: scipy_rho(np.mean([norms[m] for m in members + [c]], axis=0), target) for c in remaining}
        best = max(trials.values())
        assert added == next(c for c in remaining if trials[c] == best), f"step {step}"
        assert rho == pytest.approx(best, abs=1e-12)
        members.append(added)
        remaining.remove(added)
    assert remaining == []
    rhos = [rho for _, rho in result.curve]
    assert result.selected == members[: rhos.index(max(rhos)) + 1]
    assert result.best_rho == max(rhos)


def test_greedy_finds_the_best_subset_when_greedy_is_optimal():
    # Three layers = target + independent noise (their mean is best), one weak layer, one pure noise layer.
    rng = np.random.default_rng(0)
    target = rng.normal(size=80)
    norms = {
        "noise": rng.normal(size=80),
        "a": target + 0.8 * rng.normal(size=80),
        "weak": target + 3 * rng.normal(size=80),
        "b": target + 0.8 * rng.normal(size=80),
        "c": target + 0.8 * rng.normal(size=80),
    }
    subsets = [s for r in range(1, 6) for s in itertools.combinations(norms, r)]
    scores = {s: scipy_rho(np.mean([norms[m] for m in s], axis=0), target) for s in subsets}
    best = max(scores, key=scores.get)
    result = greedy_selection(norms, target, top_n=5)
    assert set(result.selected) == set(best) == {"a", "b", "c"}
    assert result.best_rho == pytest.approx(scores[best], abs=1e-12)


def test_undefined_utilities_are_excluded_and_ties_keep_candidate_order():
    target = np.arange(10, dtype=float)
    norms = {
        "constant": np.full(10, 3.0),
        "never_called": np.full(10, np.nan),
        "twin_1": target**2,
        "twin_2": target**2,
        "reverse": -target,
    }
    utilities = layer_utilities(norms, target)
    assert math.isnan(utilities["constant"]) and math.isnan(utilities["never_called"])
    assert rank_layers(utilities, 10) == ["twin_1", "twin_2", "reverse"]
    result = greedy_selection(norms, target, top_n=10)
    assert result.top_layers == ["twin_1", "twin_2", "reverse"]
    assert [name for name, _ in result.curve] == ["twin_1", "twin_2", "reverse"]
    assert result.selected == ["twin_1"]  # first of the equal maxima
    with pytest.raises(ValueError, match="no layer"):
        greedy_selection({"constant": np.ones(10)}, target)


# --------------------------------------------------------------------------------------------- observation
@pytest.fixture(scope="module")
def model():
    return tiny_fr_model(size=16)


def test_observation_batch_matches_separate_observer_and_labeler(model):
    crops = random_crops(9, 16, seed=4)
    names = candidate_layers(model.network)
    labeler = PseudoLabeler(model.network, model.contract, SETTINGS)
    observed = observe_calibration_batch(model, crops, labeler, names)
    x = network_input(crops, model.input_transform(), torch.device("cpu"))
    with torch.inference_mode(), NormObserver(model.network, names) as obs:
        obs.forward(x)
        norms = obs.norms()
    assert observed[NORMS_KEY].shape == (9, len(names)) and observed[NORMS_KEY].dtype == np.float32
    for i, name in enumerate(names):
        np.testing.assert_allclose(observed[NORMS_KEY][:, i], norms[name].numpy(), rtol=1e-6)
    separate = labeler(x)
    for key in ("pl_flip", "pl_noise", "pl_occlusion", "pseudo_label"):
        np.testing.assert_allclose(observed[key], separate[key], atol=1e-6)
    # float network input gives the same as uint8 crops
    again = observe_calibration_batch(model, x, labeler, names)
    np.testing.assert_allclose(again[NORMS_KEY], observed[NORMS_KEY], rtol=1e-6)


def test_calibrate_end_to_end_on_tiny_model(model):
    crops = random_crops(30, 16, seed=5)
    batches = [crops[:12], crops[12:25], crops[25:]]
    artifact = calibrate(model, batches, SETTINGS, top_n=4)
    names = candidate_layers(model.network)
    assert artifact.candidate_layers == names
    assert artifact.layer_calls["block.act"] == 2 and artifact.layer_calls["stem"] == 1
    curve_layers = [name for name, _ in artifact.greedy_curve]
    assert len(artifact.top_layers) == 4 and sorted(curve_layers) == sorted(artifact.top_layers)
    assert curve_layers[0] == artifact.top_layers[0]
    assert artifact.selected_layers == curve_layers[: len(artifact.selected_layers)]
    assert artifact.best_rho == max(rho for _, rho in artifact.greedy_curve)
    # utilities agree with scipy on independently observed norms and pseudo-labels
    labeler = PseudoLabeler(model.network, model.contract, SETTINGS)
    observed = observe_calibration_batch(model, crops, labeler, names)
    for i, name in enumerate(names):
        assert artifact.utilities[name] == pytest.approx(
            scipy_rho(observed[NORMS_KEY][:, i], observed["pseudo_label"]), abs=1e-9
        )
    assert (
        artifact.calibration_set.digest_kind == "sorted_pixel_sha256" and artifact.calibration_set.size == 30
    )
    assert artifact.settings["top_n"] == 4 and artifact.settings["perturbations"]["noise_masks"] == 2
    assert artifact.precision == "fp32"
    # same images in another batching and order -> same content, same id
    shuffled = calibrate(model, [crops[::-1][:7], crops[::-1][7:]], SETTINGS, top_n=4)
    assert shuffled.calibration_set == artifact.calibration_set
    assert shuffled.selected_layers == artifact.selected_layers
    assert shuffled.calibration_id == artifact.calibration_id


def test_calibrate_with_image_ids_digests_the_ids(model):
    crops = random_crops(10, 16, seed=6)
    ids = [f"img_{i}.jpg" for i in range(10)]
    artifact = calibrate(model, [crops], SETTINGS, top_n=3, image_ids=ids)
    assert artifact.calibration_set.digest_kind == "sorted_image_ids"
    reordered = calibrate(model, [crops], SETTINGS, top_n=3, image_ids=ids[::-1])
    assert reordered.calibration_set.digest == artifact.calibration_set.digest
    with pytest.raises(ValueError, match="image ids"):
        calibrate(model, [crops], SETTINGS, top_n=3, image_ids=ids[:4])


def test_calibration_layers_are_in_network_order_unlike_the_artifact_keys(model, tmp_path):
    # layer_norms columns follow calibration_layers(); the job's artifact JSON has sorted keys,
    # so code that indexes layer_norms must use calibration_layers(), never artifact.candidate_layers
    layers, calls = calibration_layers(model)
    called = [name for name in candidate_layers(model.network) if name in calls]
    assert layers == called and all(calls[name] >= 1 for name in layers)
    artifact = calibrate(model, [random_crops(12, 16, seed=3)], SETTINGS, top_n=3)
    path = tmp_path / "a.json"
    write_artifact(artifact, str(path))  # what `froq calibrate` does: JSON with sorted keys
    assert load_artifact(path).candidate_layers == sorted(layers) != layers
