"""The frozen observed graph (FroqScorer graph="frozen"): the same norms and embeddings as the hooked eager pass,
at other batch sizes than the trace batch, quality-only pruning, the counted-call rule, and the fallbacks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from froq_ray.imaging.decode import decode_batch
from froq_ray.models import load_model
from froq_ray.quality import accelerate
from froq_ray.quality.accelerate import frozen_copy, frozen_observed_network, relative_difference
from froq_ray.quality.observer import NormObserver, network_input
from froq_ray.quality.scorer import FroqScorer, resolve_graph
from tests.tiny_models import SCORER_LAYERS, TinyFR, hand_artifact, scorer_truth, tiny_fr_model

# the fixtures model, artifact (selecting SCORER_LAYERS) and crops (11 images) are in conftest.py


def node_kinds(module: torch.jit.ScriptModule) -> list[str]:
    return [node.kind() for node in module.graph.nodes()]


@pytest.mark.parametrize("model_batch_size", [4, 256])
def test_frozen_scores_equal_the_hooked_eager_pass_and_the_truth(model, artifact, crops, model_batch_size):
    # traced on the 2-image check batch, run on chunks of 4, 4 and 3 images (or one of 11)
    eager = FroqScorer(model, artifact, model_batch_size=model_batch_size, graph="eager")
    frozen = FroqScorer(model, artifact, model_batch_size=model_batch_size, graph="frozen")
    assert (eager.graph, frozen.graph) == ("eager", "frozen")
    got, expected = frozen.score(crops), eager.score(crops)
    _, quality, embedding = scorer_truth(model, crops)
    assert got.quality.dtype == np.float32 and got.quality.shape == (11,)
    assert got.embedding.dtype == np.float32 and got.embedding.shape == (11, model.embedding_size)
    np.testing.assert_allclose(got.quality, expected.quality, rtol=1e-4)
    np.testing.assert_allclose(got.embedding, expected.embedding, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.quality, quality, rtol=1e-4)
    np.testing.assert_allclose(got.embedding, embedding, rtol=1e-4, atol=1e-5)


def test_frozen_norms_follow_the_counted_call_rule_per_layer(model, crops):
    """Per layer: the twice-called block.act gives its second call's norm, block.bn2 the norm before the later
    in-place add, exactly as NormObserver; rows in the requested order, at batch sizes 1, 5 and 11."""
    x = network_input(crops, model.input_transform(), torch.device("cpu"))
    graph = frozen_observed_network(model.network, SCORER_LAYERS, x[:2])
    assert graph is not None
    norms_truth, _, _ = scorer_truth(model, crops)
    for n in (1, 5, 11):
        with torch.inference_mode():
            norms, embedding = graph(x[:n])
        assert norms.dtype == torch.float32 and norms.shape == (len(SCORER_LAYERS), n)
        np.testing.assert_allclose(norms.numpy(), norms_truth[:, :n], rtol=1e-4)
        with torch.inference_mode(), NormObserver(model.network, SCORER_LAYERS) as observer:
            observer.forward(x[:n])
            assert observer.call_counts()["block.act"] == 2
            np.testing.assert_allclose(norms.numpy(), observer.stacked_norms().numpy(), rtol=1e-4)


def test_quality_only_graph_drops_the_layers_after_the_deepest_selected_one(model, artifact, crops):
    x = network_input(crops, model.input_transform(), torch.device("cpu"))
    full = frozen_observed_network(model.network, SCORER_LAYERS, x[:2])
    pruned = frozen_observed_network(model.network, SCORER_LAYERS, x[:2], with_embedding=False)
    # the deepest selected layer is block.act (2nd call); down (1 conv), pool and head (linear) come later
    full_kinds, pruned_kinds = node_kinds(full), node_kinds(pruned)
    assert "aten::adaptive_avg_pool2d" in full_kinds and "aten::adaptive_avg_pool2d" not in pruned_kinds
    assert any(k in full_kinds for k in ("aten::linear", "aten::matmul", "aten::addmm"))
    assert not any(k in pruned_kinds for k in ("aten::linear", "aten::matmul", "aten::addmm"))
    convolutions = [k for k in full_kinds if "conv" in k]
    assert len([k for k in pruned_kinds if "conv" in k]) == len(convolutions) - 1 == 3
    scorer = FroqScorer(model, artifact, quality_only=True, model_batch_size=4, graph="frozen")
    result = scorer.score(crops)
    assert scorer.graph == "frozen" and result.embedding is None
    np.testing.assert_allclose(result.quality, scorer_truth(model, crops)[1], rtol=1e-4)
    eager = FroqScorer(model, artifact, quality_only=True, model_batch_size=4).score(crops)
    np.testing.assert_allclose(result.quality, eager.quality, rtol=1e-4)


class BatchSizeBranchFR(TinyFR):
    """Python control flow on the batch: a trace bakes the branch of the trace batch (2 images) into the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(self.stem(x))
        if x.shape[0] > 2:
            h = h * 2.0
        return self.head(self.pool(self.down(h)))


def test_a_trace_that_does_not_generalise_falls_back_with_one_line_and_scores_right(crops, caplog):
    model = tiny_fr_model(size=16, network_class=BatchSizeBranchFR)
    with caplog.at_level(logging.WARNING, logger="froq_ray.quality.accelerate"):
        scorer = FroqScorer(model, hand_artifact(model, SCORER_LAYERS), model_batch_size=4, graph="frozen")
    lines = [r.getMessage() for r in caplog.records if r.name == "froq_ray.quality.accelerate"]
    assert len(lines) == 1 and "frozen graph of the observed BatchSizeBranchFR not used" in lines[0]
    assert "relative difference" in lines[0] and "check batch of 3" in lines[0]
    assert scorer.graph == "eager"
    result = scorer.score(crops)
    # the eager path: the chunks of 4, 4 and 3 images all take the doubled branch
    x = network_input(crops, model.input_transform(), torch.device("cpu"))
    embeddings, qualities = [], []
    with torch.inference_mode(), NormObserver(model.network, SCORER_LAYERS) as observer:
        for rows in (slice(0, 4), slice(4, 8), slice(8, 11)):
            embeddings.append(observer.forward(x[rows]))
            qualities.append(observer.stacked_norms().mean(dim=0))
    np.testing.assert_allclose(result.embedding, torch.cat(embeddings).numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.quality, torch.cat(qualities).numpy(), rtol=1e-6)


def test_a_failing_trace_falls_back_with_one_line_and_scores_like_eager(
    model, artifact, crops, caplog, monkeypatch
):
    def broken_freeze(module):  # noqa: ARG001
        raise RuntimeError("freezing is broken here")

    monkeypatch.setattr(torch.jit, "freeze", broken_freeze)
    with caplog.at_level(logging.WARNING, logger="froq_ray.quality.accelerate"):
        scorer = FroqScorer(model, artifact, graph="frozen")
    lines = [r.getMessage() for r in caplog.records if r.name == "froq_ray.quality.accelerate"]
    assert lines == [
        "frozen graph of the observed TinyFR not used (RuntimeError: freezing is broken here); running eagerly"
    ]
    assert scorer.graph == "eager"
    result = scorer.score(crops)
    _, quality, embedding = scorer_truth(model, crops)
    np.testing.assert_allclose(result.quality, quality, rtol=1e-5)
    np.testing.assert_allclose(result.embedding, embedding, rtol=1e-5, atol=1e-6)
    # the hooks of the failed attempt are gone: one forward pass runs no observer hook
    assert all(not m._forward_hooks for m in model.network.modules())


def test_a_failing_check_falls_back(model, artifact, crops, monkeypatch, caplog):
    monkeypatch.setattr(accelerate, "TOLERANCE", -1.0)  # no graph can pass
    with caplog.at_level(logging.WARNING, logger="froq_ray.quality.accelerate"):
        scorer = FroqScorer(model, artifact, graph="frozen")
    assert scorer.graph == "eager" and "relative difference" in caplog.records[-1].getMessage()
    np.testing.assert_allclose(scorer.score(crops).quality, scorer_truth(model, crops)[1], rtol=1e-5)


def test_frozen_copy_is_checked_on_another_batch_size(model, crops, caplog):
    x = network_input(crops, model.input_transform(), torch.device("cpu"))
    copy = frozen_copy(model.network, x[:2])
    assert isinstance(copy, torch.jit.ScriptModule)
    with torch.inference_mode():
        np.testing.assert_allclose(copy(x).numpy(), model.network(x).numpy(), rtol=1e-4, atol=1e-5)
    branching = tiny_fr_model(size=16, network_class=BatchSizeBranchFR).network
    with caplog.at_level(logging.WARNING, logger="froq_ray.quality.accelerate"):
        assert frozen_copy(branching, x[:2]) is branching
    assert "check batch of 3" in caplog.records[-1].getMessage()


def test_relative_difference_is_per_row():
    reference = (torch.tensor([[1.0, 2.0], [1000.0, 1000.0]]), torch.tensor([4.0, 8.0]))
    candidate = (torch.tensor([[1.0, 2.002], [1000.0, 1000.0]]), torch.tensor([4.0, 8.0]))
    assert relative_difference(candidate, reference) == pytest.approx(1e-3, rel=1e-3)
    assert relative_difference(candidate[0], reference) == float("inf")


def test_graph_resolution():
    assert resolve_graph("auto", "cpu", "fp32", compile=False) == "frozen"
    assert resolve_graph("auto", "cpu", "bf16", compile=False) == "eager"
    assert resolve_graph("auto", "cpu", "fp32", compile=True) == "eager"
    assert resolve_graph("auto", "cuda", "fp32", compile=False) == "eager"
    assert resolve_graph("frozen", "cuda", "fp32", compile=False) == "frozen"
    assert resolve_graph("eager", "cpu", "fp32", compile=False) == "eager"
    with pytest.raises(ValueError, match="graph 'frozen' runs fp32 without torch.compile"):
        resolve_graph("frozen", "cpu", "fp16", compile=False)
    with pytest.raises(ValueError, match="graph must be one of"):
        resolve_graph("traced", "cpu", "fp32", compile=False)


def test_empty_batch_through_the_frozen_graph(model, artifact):
    result = FroqScorer(model, artifact, graph="frozen").score(np.zeros((0, 16, 16, 3), np.uint8))
    assert result.quality.shape == (0,) and result.embedding.shape == (0, model.embedding_size)


@pytest.mark.realdata
def test_mobilefacenet_frozen_equals_eager_on_real_crops(mobilefacenet_pt: Path, lfw_dev_dir: Path):
    """Real weights, real LFW crops, the shipped calibration's layers plus a shared ReLU called twice
    (dw_conv.relu) and a batch-norm whose output an in-place ReLU6 overwrites later (conv1.1)."""
    model = load_model("mobilefacenet", str(mobilefacenet_pt))
    try:
        paths = sorted((lfw_dev_dir / "images").glob("*/*.jpg"))[:13]
        crops = decode_batch([p.read_bytes() for p in paths], 112).pixels
        layers = ["conv3", "features.7.conv.1.0", "bn", "dw_conv.relu", "conv1.1"]
        artifact = hand_artifact(model, layers)
        options = {"model_batch_size": 5, "memory_format": "channels_last"}  # chunks of 5, 5, 3
        frozen = FroqScorer(model, artifact, graph="frozen", **options)
        assert frozen.graph == "frozen"
        got = frozen.score(crops)
        expected = FroqScorer(model, artifact, graph="eager", **options).score(crops)
        np.testing.assert_allclose(got.quality, expected.quality, rtol=1e-4)
        np.testing.assert_allclose(got.embedding, expected.embedding, rtol=1e-4, atol=1e-4)
        only = FroqScorer(model, artifact, graph="frozen", quality_only=True, **options).score(crops)
        np.testing.assert_allclose(only.quality, expected.quality, rtol=1e-4)
    finally:
        model.network.to(memory_format=torch.contiguous_format)
