"""FroqScorer: quality vs materialised activations, embedding, quality-only, chunking, precision."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from froq_ray.quality.artifact import ArtifactMismatchError
from froq_ray.quality.observer import StopPoint, network_input
from froq_ray.quality.scorer import FroqScorer
from tests.tiny_models import random_crops, scorer_truth


def test_quality_is_the_mean_of_materialised_layer_norms(model, artifact, crops):
    # the fixtures (conftest.py) select SCORER_LAYERS
    result = FroqScorer(model, artifact).score(crops)
    _, quality, embedding = scorer_truth(model, crops)
    assert result.quality.dtype == np.float32 and result.quality.shape == (11,)
    np.testing.assert_allclose(result.quality, quality, rtol=1e-5)
    assert result.embedding.dtype == np.float32 and result.embedding.shape == (11, model.embedding_size)
    np.testing.assert_allclose(result.embedding, embedding, rtol=1e-5, atol=1e-6)
    assert result.precision == "fp32"


def test_quality_only_equals_full_and_stops_early(model, artifact, crops):
    full = FroqScorer(model, artifact).score(crops)
    fast = FroqScorer(model, artifact, quality_only=True)
    assert fast.stop_at == StopPoint("block.act", 2)
    ran_later = []
    handle = model.network.down.register_forward_hook(lambda *_: ran_later.append(1))
    try:
        result = fast.score(crops)
    finally:
        handle.remove()
    assert ran_later == [] and result.embedding is None
    np.testing.assert_array_equal(result.quality, full.quality)


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_model_batch_size_does_not_change_results(model, artifact, crops, batch_size):
    reference = FroqScorer(model, artifact, model_batch_size=256).score(crops)
    sizes = []
    handle = model.network.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        chunked = FroqScorer(model, artifact, model_batch_size=batch_size).score(crops)
    finally:
        handle.remove()
    assert max(sizes) == min(batch_size, 11) and sum(sizes) == 11
    np.testing.assert_allclose(chunked.quality, reference.quality, rtol=1e-5)
    np.testing.assert_allclose(chunked.embedding, reference.embedding, rtol=1e-5, atol=1e-6)


def test_float_network_input_and_tensor_crops_are_accepted(model, artifact, crops):
    scorer = FroqScorer(model, artifact)
    from_uint8 = scorer.score(crops)
    x = network_input(crops, model.input_transform(), torch.device("cpu"))
    np.testing.assert_allclose(scorer.score(x).quality, from_uint8.quality, rtol=1e-6)
    np.testing.assert_allclose(scorer.score(torch.from_numpy(crops)).quality, from_uint8.quality, rtol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_is_recorded_and_close(model, artifact, crops, precision):
    full = FroqScorer(model, artifact).score(crops)
    low = FroqScorer(model, artifact, precision=precision).score(crops)
    assert low.precision == precision and low.quality.dtype == np.float32
    np.testing.assert_allclose(low.quality, full.quality, rtol=3e-2)


def test_wrong_model_or_bad_arguments_are_refused(model, artifact):
    other = dataclasses.replace(model, weights_sha256="0" * 64)
    with pytest.raises(ArtifactMismatchError, match="weights_sha256"):
        FroqScorer(other, artifact)
    with pytest.raises(ValueError, match="precision"):
        FroqScorer(model, artifact, precision="int8")
    with pytest.raises(ValueError, match="model_batch_size"):
        FroqScorer(model, artifact, model_batch_size=0)


def test_empty_batch(model, artifact):
    result = FroqScorer(model, artifact).score(np.zeros((0, 16, 16, 3), np.uint8))
    assert result.quality.shape == (0,) and result.embedding.shape == (0, model.embedding_size)


def test_scores_on_the_calibration_set_reproduce_the_calibrated_correlation(model):
    from scipy.stats import spearmanr

    from froq_ray.quality.calibration import calibrate, observe_calibration_batch
    from froq_ray.quality.observer import candidate_layers
    from froq_ray.quality.perturbations import PerturbationSettings, PseudoLabeler

    settings = PerturbationSettings(noise_masks=2, noise_alphas=(0.05,), occlusion_cell=8)
    images = random_crops(24, 16, seed=12)
    artifact = calibrate(model, [images[:10], images[10:]], settings, top_n=4)
    quality = FroqScorer(model, artifact).score(images).quality
    labels = PseudoLabeler(model.network, model.contract, settings)(
        network_input(images, model.input_transform(), torch.device("cpu"))
    )["pseudo_label"]
    assert spearmanr(quality, labels)[0] == pytest.approx(artifact.best_rho, abs=1e-9)
    observed = observe_calibration_batch(
        model, images, PseudoLabeler(model.network, model.contract, settings), candidate_layers(model.network)
    )
    columns = [candidate_layers(model.network).index(n) for n in artifact.selected_layers]
    np.testing.assert_allclose(quality, observed["layer_norms"][:, columns].mean(axis=1), rtol=1e-6)
