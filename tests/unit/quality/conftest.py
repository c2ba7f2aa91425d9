"""Fixtures of the FroqScorer tests (test_scorer.py, test_frozen_graph.py): the tiny network at 16 px, a hand-made
artifact selecting :data:`tests.tiny_models.SCORER_LAYERS`, and 11 crops (module-scoped; a test module that
defines a fixture of the same name uses its own)."""

from __future__ import annotations

import numpy as np
import pytest

from froq_ray.models.base import LoadedModel
from froq_ray.quality.artifact import CalibrationArtifact
from tests.tiny_models import SCORER_LAYERS, hand_artifact, random_crops, tiny_fr_model


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny_fr_model(size=16)


@pytest.fixture(scope="module")
def artifact(model: LoadedModel) -> CalibrationArtifact:
    return hand_artifact(model, SCORER_LAYERS)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """(11, 16, 16, 3) uint8."""
    return random_crops(11, 16, seed=9)
