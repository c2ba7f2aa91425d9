"""CR as the pseudo-label source of FROQ calibration, for identity-labelled calibration sets.

FROQ's calibration ranks layers by Spearman(layer norms, pseudo-label); ``build_artifact`` in
:mod:`froq_ray.quality.calibration` reads the target from ``observations["pseudo_label"]``. Here that target
is the certainty ratio computed from the calibration images' own embeddings and identity labels, so no
perturbation passes are needed. Images whose CR is undefined (the only image of their identity) are left out
of the calibration set; the artifact's ``settings`` record ``"target": "cr"`` (instead of the perturbation
settings) and what was left out, and its ``calibration_set`` is the digest of the image ids that were used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..models.base import LoadedModel
from ..quality.artifact import CalibrationArtifact, CalibrationSetDigest
from ..quality.calibration import NORMS_KEY, PSEUDO_LABEL_KEY, build_artifact
from ..quality.perturbations import PerturbationSettings
from .classifiability import DEFAULT_EPS, classifiability

TARGET_CR = "cr"


def cr_observations(
    layer_norms: np.ndarray,
    embeddings: np.ndarray,
    identities: Sequence[str] | np.ndarray,
    eps: float = DEFAULT_EPS,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(observations for ``build_artifact`` with ``pseudo_label`` = CR, mask of the images used).

    ``layer_norms`` (N, L) as written by ``observe_calibration_batch`` / the calibrate job; ``embeddings``
    (N, D) and ``identities`` (N,) of the same images. Rows with undefined CR are dropped.
    """
    norms = np.asarray(layer_norms, dtype=np.float32)
    if norms.ndim != 2 or norms.shape[0] != len(identities) or len(embeddings) != len(identities):
        raise ValueError(
            f"layer_norms {norms.shape}, {len(embeddings)} embeddings and {len(identities)} identities "
            "must align"
        )
    cr = classifiability(embeddings, identities, eps=eps).cr
    used = np.isfinite(cr)
    if used.sum() < 3:
        raise ValueError(f"only {int(used.sum())} images have a defined CR: need identities with >= 2 images")
    return {NORMS_KEY: norms[used], PSEUDO_LABEL_KEY: cr[used].astype(np.float32)}, used


def build_artifact_against_cr(
    model: LoadedModel,
    layer_names: Sequence[str],
    layer_norms: np.ndarray,
    embeddings: np.ndarray,
    identities: Sequence[str] | np.ndarray,
    image_ids: Sequence[str],
    top_n: int,
    precision: str,
    layer_calls: Mapping[str, int],
    eps: float = DEFAULT_EPS,
) -> CalibrationArtifact:
    """Layer selection against CR (module doc): the same utilities / greedy / artifact as the perturbation
    calibration, with ``settings = {"target": "cr", "top_n", "cr": {...}}``."""
    if len(image_ids) != len(identities):
        raise ValueError(f"{len(image_ids)} image ids for {len(identities)} images")
    observations, used = cr_observations(layer_norms, embeddings, identities, eps)
    digest = CalibrationSetDigest()
    digest.add_ids(np.asarray(image_ids, dtype=object)[used])
    artifact = build_artifact(
        model,
        layer_names,
        observations,
        PerturbationSettings(),
        top_n,
        digest.result(),
        precision,
        layer_calls,
    )
    labels = np.asarray(identities, dtype=object)
    artifact.settings = {
        "target": TARGET_CR,
        "top_n": top_n,
        "cr": {
            "eps": eps,
            "images_used": int(used.sum()),
            "images_without_cr": int((~used).sum()),
            "identities_used": int(np.unique(labels[used].astype(str)).size),
        },
    }
    return artifact
