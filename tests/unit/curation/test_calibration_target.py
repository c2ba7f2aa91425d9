"""CR as the calibration target: observations carry CR as pseudo_label; layers are chosen against it."""

from __future__ import annotations

import numpy as np

from froq_ray.curation.calibration_target import build_artifact_from_labels, cr_observations
from froq_ray.curation.classifiability import classifiability
from froq_ray.quality.artifact import CalibrationArtifact
from froq_ray.quality.calibration import PSEUDO_LABEL_KEY, spearman
from tests.tiny_models import tiny_fr_model
from tests.unit.curation.test_centres import clustered


def test_layers_are_selected_against_cr():
    x, labels = clustered(n_ids=9, seed=4)
    cr = classifiability(x, labels).cr
    rng = np.random.default_rng(0)
    filled = np.nan_to_num(cr, nan=0.0)
    norms = np.stack(
        [
            rng.normal(size=cr.size),  # noise
            filled + 0.02 * rng.normal(size=cr.size),  # tracks CR
            -filled + 0.02 * rng.normal(size=cr.size),
        ],
        axis=1,
    )  # anti-correlated
    observations, used = cr_observations(norms, x, labels)
    assert used.tolist() == np.isfinite(cr).tolist() and (~used).sum() == 2  # the two singletons
    np.testing.assert_array_equal(observations[PSEUDO_LABEL_KEY], cr[used])

    ids = [f"img{i}" for i in range(len(labels))]
    artifact = build_artifact_from_labels(  # the defaults: target cr, greedy observer
        tiny_fr_model(),
        ["noise", "tracks_cr", "anti"],
        norms,
        x,
        identities=labels,
        image_ids=ids,
        top_n=3,
        precision="fp32",
        layer_calls={"noise": 1, "tracks_cr": 1, "anti": 1},
    )
    assert artifact.selected_layers == ["tracks_cr"] and artifact.top_layers == ["tracks_cr", "noise", "anti"]
    assert artifact.utilities["tracks_cr"] == spearman(norms[used, 1], cr[used])
    assert artifact.settings["target"] == "cr" and artifact.settings["cr"]["images_without_target"] == 2
    assert artifact.calibration_set.size == int(used.sum())
    reloaded = CalibrationArtifact.from_json(artifact.to_json())  # a valid artifact, id stable
    assert reloaded.calibration_id == artifact.calibration_id and reloaded.settings["target"] == "cr"
