"""Speed options of the scorer (froq_ray.quality.scorer, froq_ray.quality.accelerate) and the scoring stage
settings: channels_last and torch.compile give the eager NCHW results, fall back (with a warning) when they
cannot, and are recorded."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from froq_ray.engine.stages import ScoringStageConfig, expected_actor_device, scoring_settings
from froq_ray.quality import accelerate
from froq_ray.quality.accelerate import apply_memory_format, compiled_or_eager, resolve_memory_format
from froq_ray.quality.scorer import FroqScorer
from tests.tiny_models import hand_artifact, random_crops, tiny_fr_model

SELECTED = ["block.act", "block.bn2", "stem"]


@pytest.fixture
def model():
    return tiny_fr_model(size=16)  # function scope: some tests change the network's memory format


@pytest.fixture(scope="module")
def crops():
    return random_crops(9, 16, seed=4)


def _reference(model, crops):
    return FroqScorer(model, hand_artifact(model, SELECTED)).score(crops)


def _is_channels_last(network: nn.Module) -> bool:
    weights = [p for p in network.parameters() if p.dim() == 4]
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def test_resolve_memory_format():
    assert resolve_memory_format("auto") == "channels_last"  # measured faster on CUDA and on the CPU too
    assert resolve_memory_format("channels_last") == "channels_last"
    with pytest.raises(ValueError, match="memory_format"):
        resolve_memory_format("nhwc")


def test_channels_last_scores_equal_nchw(model, crops):
    expected = _reference(model, crops)
    scorer = FroqScorer(
        model, hand_artifact(model, SELECTED), memory_format="channels_last", model_batch_size=4
    )
    result = scorer.score(crops)
    assert scorer.memory_format == "channels_last" and _is_channels_last(model.network)
    np.testing.assert_allclose(result.quality, expected.quality, rtol=1e-5)
    np.testing.assert_allclose(result.embedding, expected.embedding, rtol=1e-5, atol=1e-6)


class RefusesChannelsLast(nn.Module):
    """A network whose forward refuses channels_last input (as some custom ops do)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous():
            raise RuntimeError("needs NCHW")
        return self.conv(x).flatten(1)


def test_memory_format_falls_back_to_nchw_with_a_warning(caplog):
    network = RefusesChannelsLast().eval()
    with caplog.at_level(logging.WARNING):
        used = apply_memory_format(network, "channels_last", torch.randn(2, 3, 8, 8))
    assert used == "contiguous" and network.conv.weight.is_contiguous()
    assert "channels_last not used" in caplog.text and "needs NCHW" in caplog.text


def test_compiled_scorer_equals_eager_and_removes_its_hooks_on_close(model, crops):
    expected = _reference(model, crops)
    scorer = FroqScorer(
        model, hand_artifact(model, SELECTED), compile=True, compile_backend="eager", model_batch_size=4
    )
    assert scorer.compiled
    for _ in range(2):  # the persistent hooks reset per forward: a second call gives the same scores
        result = scorer.score(crops)
        np.testing.assert_allclose(result.quality, expected.quality, rtol=1e-5)
        np.testing.assert_allclose(result.embedding, expected.embedding, rtol=1e-5, atol=1e-6)
    assert any(m._forward_hooks for m in model.network.modules())
    scorer.close()
    assert not scorer.compiled and not any(m._forward_hooks for m in model.network.modules())


def test_compile_failure_falls_back_to_eager(model, crops, monkeypatch, caplog):
    def broken(_network, _backend="inductor"):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(accelerate, "compile_network", broken)
    with caplog.at_level(logging.WARNING):
        scorer = FroqScorer(model, hand_artifact(model, SELECTED), compile=True)
    assert not scorer.compiled and "no compiler here" in caplog.text
    assert not any(m._forward_hooks for m in model.network.modules())
    np.testing.assert_allclose(scorer.score(crops).quality, _reference(model, crops).quality, rtol=1e-6)


def test_compile_is_not_combined_with_quality_only(model, caplog):
    with caplog.at_level(logging.WARNING):
        scorer = FroqScorer(model, hand_artifact(model, SELECTED), compile=True, quality_only=True)
    assert not scorer.compiled and "quality_only" in caplog.text


def test_compiled_copy_with_wrong_output_is_discarded(model, monkeypatch, caplog):
    monkeypatch.setattr(accelerate, "compile_network", lambda network, _backend: lambda x: network(x) * 2)
    sample = torch.randn(2, 3, 16, 16)
    with caplog.at_level(logging.WARNING):
        assert compiled_or_eager(model.network, sample) is model.network
    assert "relative difference" in caplog.text
    monkeypatch.undo()
    kept = compiled_or_eager(model.network, sample, backend="eager")
    assert kept is not model.network
    with torch.inference_mode():
        torch.testing.assert_close(kept(sample), model.network(sample))


def _stage(**kw) -> ScoringStageConfig:
    return ScoringStageConfig(mode="froq", model_name="m", model_weights=None, model_options={}, **kw)


def test_scoring_settings_for_the_manifest():
    assert expected_actor_device(_stage(num_gpus=1)) == "cuda"
    assert expected_actor_device(_stage(num_gpus=0)) == "cpu"
    assert expected_actor_device(_stage(device="cpu", num_gpus=1)) == "cpu"
    gpu = scoring_settings(_stage(num_gpus=1, compile=True, model_batch_size=512))
    assert gpu["device"] == "cuda" and gpu["memory_format"] == "channels_last"
    assert gpu["compile_requested"] is True and gpu["model_batch_size"] == 512 and "pinned" in gpu["transfer"]
    cpu = scoring_settings(_stage())
    assert (
        cpu["device"] == "cpu"
        and cpu["memory_format"] == "channels_last"
        and cpu["compile_requested"] is False
    )
    assert scoring_settings(_stage(memory_format="contiguous"))["memory_format"] == "contiguous"


def test_scoring_settings_record_the_graph_requested_resolved_and_used():
    cpu = scoring_settings(_stage(), ["frozen"])
    assert (cpu["graph_requested"], cpu["graph"], cpu["graph_used"]) == ("auto", "frozen", ["frozen"])
    gpu = scoring_settings(_stage(num_gpus=1))  # a GPU keeps eager (or compile); nothing scored yet
    assert (gpu["graph_requested"], gpu["graph"], gpu["graph_used"]) == ("auto", "eager", [])
    assert scoring_settings(_stage(precision="bf16"))["graph"] == "eager"
    assert scoring_settings(_stage(compile=True))["graph"] == "eager"
    # one actor fell back (its frozen graph failed the check), another did not: both are listed
    mixed = scoring_settings(_stage(graph="frozen"), ["frozen", "eager", "frozen"])
    assert (mixed["graph"], mixed["graph_used"]) == ("frozen", ["eager", "frozen"])
    assert scoring_settings(_stage(graph="eager"))["graph"] == "eager"
    other = scoring_settings(
        ScoringStageConfig(mode="pseudo_label", model_name="m", model_weights=None, model_options={})
    )
    assert (other["graph_requested"], other["graph"], other["graph_used"]) == (None, None, [])
