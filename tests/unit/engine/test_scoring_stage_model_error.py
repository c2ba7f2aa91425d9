"""ScoringStage (no Ray): a model failure on one image of a batch is retried image by image, so only that image
gets ``model_error`` (with the exception in ``error``) and every other image keeps the quality and embedding
an unfailing run gives it. The model raises on a constant (all-grey) crop: see ``PoisonedTinyFR``."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from froq_ray import status as st
from froq_ray.engine import stages
from froq_ray.engine.stages import PIXELS, ScoringStage, ScoringStageConfig, arrow_to_columns
from froq_ray.quality.scorer import FroqScorer
from tests.tiny_models import PoisonedTinyFR, hand_artifact, random_crops, tiny_fr_model

SIZE = 16
SELECTED = ["block.act", "stem"]
POISON, CORRUPT = 5, 2  # row indices in the test batch


@pytest.fixture(scope="module")
def model():
    return tiny_fr_model(size=SIZE, network_class=PoisonedTinyFR)


@pytest.fixture(scope="module")
def artifact(model):
    return hand_artifact(model, SELECTED)


@pytest.fixture
def stage(model, artifact, monkeypatch, one_torch_thread):  # noqa: ARG001 - requested for its side effect: one torch thread
    monkeypatch.setattr(stages, "load_scoring_model", lambda _cfg: model)
    cfg = ScoringStageConfig(
        mode="froq",
        model_name=model.name,
        model_weights=None,
        model_options={},
        artifact_json=artifact.to_json(),
        device="cpu",
        model_batch_size=3,
        # the poison check is Python control flow on the values, which a traced (frozen) graph cannot keep
        graph="eager",
    )
    return ScoringStage(cfg)


def decoded_batch(pixels: np.ndarray, statuses: list[str]) -> dict[str, np.ndarray]:
    """What the decode stage hands the scoring stage: pass-through columns, pixels, status and error."""
    n = len(statuses)
    return {
        "row": np.arange(n, dtype=np.int64),
        "shard": np.zeros(n, dtype=np.int64),
        "path": np.asarray([f"id/{i}.jpg" for i in range(n)], dtype=object),
        PIXELS: pixels,
        "status": np.asarray(statuses, dtype=object),
        "error": np.asarray([None if s == st.OK else f"{s} input" for s in statuses], dtype=object),
    }


def test_a_failing_image_fails_alone_after_an_item_by_item_retry(stage, model, artifact, caplog):
    pixels = random_crops(8, SIZE, seed=4)
    pixels[POISON] = 128  # constant crop: the model raises on any batch that holds it
    pixels[CORRUPT] = 0  # a row the decode stage already failed: never scored
    statuses = [st.CORRUPT if i == CORRUPT else st.OK for i in range(8)]
    with caplog.at_level(logging.WARNING, logger=stages.log.name):
        out = arrow_to_columns(stage(decoded_batch(pixels, statuses)))

    assert any("retrying item by item" in r.getMessage() for r in caplog.records), "the batch did not fail"
    assert list(out["status"]) == [
        st.CORRUPT if i == CORRUPT else st.MODEL_ERROR if i == POISON else st.OK for i in range(8)
    ]
    assert out["error"][POISON] == "RuntimeError: poisoned input at batch rows [0]"
    assert out["error"][CORRUPT] == "corrupt input"
    good = [i for i in range(8) if i not in (POISON, CORRUPT)]
    assert all(out["error"][i] is None for i in good)
    assert (
        np.isnan(out["quality"][[POISON, CORRUPT]]).all()
        and np.isnan(out["embedding"][[POISON, CORRUPT]]).all()
    )

    # independently: the scorer on the good crops alone, in one batch (nothing fails there)
    expected = FroqScorer(model, artifact).score(pixels[good])
    np.testing.assert_allclose(out["quality"][good], expected.quality, rtol=1e-5)
    np.testing.assert_allclose(out["embedding"][good], expected.embedding, rtol=1e-5, atol=1e-6)

    # and the same stage on the batch without the failing image: the same values, without a retry
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=stages.log.name):
        clean = arrow_to_columns(stage(decoded_batch(pixels[good], [st.OK] * len(good))))
    assert not caplog.records and list(clean["status"]) == [st.OK] * len(good)
    np.testing.assert_allclose(out["quality"][good], clean["quality"], rtol=1e-5)
    np.testing.assert_allclose(out["embedding"][good], clean["embedding"], rtol=1e-5, atol=1e-6)


def test_a_batch_whose_every_image_fails_has_no_result_columns(stage):
    pixels = np.stack([np.full((SIZE, SIZE, 3), v, np.uint8) for v in (0, 77, 255)])
    out = arrow_to_columns(stage(decoded_batch(pixels, [st.OK] * 3)))
    assert list(out["status"]) == [st.MODEL_ERROR] * 3
    assert all(e == "RuntimeError: poisoned input at batch rows [0]" for e in out["error"])
    # no row was scored: the write stage fills the result columns with nulls (engine.write)
    assert "quality" not in out and "embedding" not in out
    assert list(out["path"]) == ["id/0.jpg", "id/1.jpg", "id/2.jpg"]
