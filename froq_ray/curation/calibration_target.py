"""Labelled calibration targets: what FROQ calibration ranks layers against when identities are known.

FROQ's calibration ranks layers by Spearman(layer norms, pseudo-label); ``build_artifact`` in
:mod:`froq_ray.quality.calibration` reads the target from ``observations["pseudo_label"]``. Here that target
comes from the calibration images' own embeddings and identity labels, so no perturbation passes are needed
(one forward pass per image gives the norms and the embedding):

- ``cr``: the certainty ratio (:mod:`.classifiability`): CCS / (NNCCS + 1 + eps).
- ``genuine``: the image's mean cosine similarity to the OTHER images of its identity,
  (x.S_c - 1) / (n_c - 1) for the unit embedding x and the sum S_c of its identity's n_c unit embeddings
  (float64).

Images whose target is undefined (the only image of their identity; for ``cr`` also a data set with one
identity) are left out of the calibration set and counted; the artifact's ``settings`` record the target
(instead of the perturbation settings) and what was left out, and its ``calibration_set`` is the digest of the
image ids that were used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..models.base import LoadedModel
from ..quality.artifact import CalibrationArtifact, CalibrationSetDigest
from ..quality.calibration import NORMS_KEY, PSEUDO_LABEL_KEY, build_artifact
from ..quality.linear import DEFAULT_FOLDS
from .centres import CentreSums, l2_normalise
from .classifiability import DEFAULT_EPS, certainty_ratio, classifiability, nearest_other_centre

TARGET_CR = "cr"
TARGET_GENUINE = "genuine"
LABELLED_TARGETS = (TARGET_CR, TARGET_GENUINE)


def _references(n: int, sources: Sequence[int] | np.ndarray | None) -> np.ndarray:
    src = np.arange(n) if sources is None else np.asarray(sources, dtype=np.int64)
    if src.shape != (n,) or src.min(initial=0) < 0 or src.max(initial=0) >= n:
        raise ValueError(f"sources must give a row index in 0..{n - 1} for each of the {n} images")
    if not (src[src] == src).all():
        raise ValueError("sources must point at reference rows (rows that are their own source)")
    return src


def _reference_sums(
    embeddings: np.ndarray, identities: Sequence[str] | np.ndarray, sources: Sequence[int] | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, CentreSums, np.ndarray]:
    """(unit embeddings float32 (N, D), each row's source row int64 (N,), the centre sums of the reference rows,
    each row's identity index in them int64 (N,), -1 when its identity has no reference row)."""
    unit = l2_normalise(embeddings)
    labels = np.asarray(identities, dtype=object)
    src = _references(len(labels), sources)
    ref = src == np.arange(len(labels))
    sums = CentreSums.from_chunk(unit[ref], labels[ref])
    return unit, src, sums, sums.index_of(labels)


def genuine_similarity(
    embeddings: np.ndarray,
    identities: Sequence[str] | np.ndarray,
    sources: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Mean cosine similarity of each image to the other reference images of its identity, float32 (N,).

    ``sources`` (optional, (N,) row indices): row i is a (degraded) copy of reference row ``sources[i]``; the
    references are the rows that are their own source (default: every row). An image is compared with the
    references of its identity except its own source, (x.S_c - x.u_s) / (n_c - 1) in float64, so a copy is
    never compared with the photo it was made from. NaN when no such reference exists (the only image of an
    identity). ``embeddings`` (N, D) of any non-zero scale; ``ValueError`` for a zero or non-finite row or
    misaligned inputs."""
    if len(embeddings) != len(identities):
        raise ValueError(f"{len(embeddings)} embeddings for {len(identities)} identities")
    unit32, src, sums, own = _reference_sums(embeddings, identities, sources)
    unit = unit32.astype(np.float64)
    known = own >= 0
    safe = np.where(known, own, 0)
    dot = np.einsum("nd,nd->n", unit, sums.sums[safe]) - np.einsum("nd,nd->n", unit, unit[src])
    others = np.where(known, sums.counts[safe], 0) - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(others > 0, dot / others, np.nan)
    return mean.astype(np.float32)


def certainty_ratio_against(
    embeddings: np.ndarray,
    identities: Sequence[str] | np.ndarray,
    sources: Sequence[int] | np.ndarray | None = None,
    eps: float = DEFAULT_EPS,
) -> np.ndarray:
    """CR (float32 (N,)) with the class centres made of the reference rows (``sources`` as in
    :func:`genuine_similarity`): CCS = cos(x, S_c - u_s) (the own source left out), NNCCS = the best cosine to
    another identity's reference centre. Without ``sources`` this is :func:`.classifiability.classifiability`'s
    CR. NaN where CCS or NNCCS is undefined (no other reference of the identity; one identity)."""
    if len(embeddings) != len(identities):
        raise ValueError(f"{len(embeddings)} embeddings for {len(identities)} identities")
    if sources is None:
        return classifiability(embeddings, identities, eps=eps).cr
    unit, src, sums, own = _reference_sums(embeddings, identities, sources)
    known = own >= 0
    safe = np.where(known, own, 0)
    loo = sums.sums[safe] - unit[src].astype(np.float64)
    length = np.linalg.norm(loo, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ccs = np.einsum("nd,nd->n", unit.astype(np.float64), loo) / length
    ccs[~known | (np.where(known, sums.counts[safe], 0) < 2) | (length <= 1e-6)] = np.nan
    nnccs, _ = nearest_other_centre(unit, own, torch.from_numpy(sums.directions(np.float32)))
    return certainty_ratio(ccs, nnccs, eps)


def labelled_target(
    target: str,
    embeddings: np.ndarray,
    identities: Sequence[str] | np.ndarray,
    eps: float = DEFAULT_EPS,
    *,
    sources: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """The ``target`` (``cr`` or ``genuine``, module doc) per image, float32 (N,), NaN where undefined;
    ``sources`` marks degraded copies (:func:`genuine_similarity`). ``ValueError`` for another target name."""
    if target == TARGET_CR:
        return certainty_ratio_against(embeddings, identities, sources, eps)
    if target == TARGET_GENUINE:
        return genuine_similarity(embeddings, identities, sources)
    raise ValueError(
        f"labelled calibration target must be one of {', '.join(LABELLED_TARGETS)}, got {target!r}"
    )


def labelled_observations(
    layer_norms: np.ndarray,
    embeddings: np.ndarray,
    identities: Sequence[str] | np.ndarray,
    target: str = TARGET_CR,
    *,
    eps: float = DEFAULT_EPS,
    sources: Sequence[int] | np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(observations for ``build_artifact`` with ``pseudo_label`` = the labelled ``target``, mask of the images
    used). ``sources``: degraded copies' reference rows (:func:`genuine_similarity`).

    ``layer_norms`` (N, L) as written by ``observe_calibration_batch`` / the calibrate job; ``embeddings``
    (N, D) and ``identities`` (N,) of the same images. Rows with an undefined target are dropped; fewer than 3
    rows left is a ``ValueError``."""
    norms = np.asarray(layer_norms, dtype=np.float32)
    if norms.ndim != 2 or norms.shape[0] != len(identities) or len(embeddings) != len(identities):
        raise ValueError(
            f"layer_norms {norms.shape}, {len(embeddings)} embeddings and {len(identities)} identities "
            "must align"
        )
    values = labelled_target(target, embeddings, identities, eps, sources=sources)
    used = np.isfinite(values)
    if used.sum() < 3:
        raise ValueError(
            f"only {int(used.sum())} images have a defined {target} target: need identities with >= 2 images"
        )
    return {NORMS_KEY: norms[used], PSEUDO_LABEL_KEY: values[used].astype(np.float32)}, used


def cr_observations(
    layer_norms: np.ndarray,
    embeddings: np.ndarray,
    identities: Sequence[str] | np.ndarray,
    eps: float = DEFAULT_EPS,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`labelled_observations` with the ``cr`` target."""
    return labelled_observations(layer_norms, embeddings, identities, TARGET_CR, eps=eps)


def target_settings(
    target: str, used: np.ndarray, identities: np.ndarray, eps: float, **extra: object
) -> dict:
    """The artifact ``settings`` of a labelled-target calibration (without ``top_n``): the target, how many
    images and identities were used, how many images had no defined target, and ``extra`` counts."""
    labels = np.asarray(identities, dtype=object).astype(str)
    counts = {
        "images_used": int(used.sum()),
        "images_without_target": int((~used).sum()),
        "identities_used": int(np.unique(labels[used]).size),
        **extra,
    }
    if target == TARGET_CR:
        counts = {"eps": eps, **counts}
    return {"target": target, target: counts}


def build_artifact_from_labels(
    model: LoadedModel,
    layer_names: Sequence[str],
    layer_norms: np.ndarray,
    embeddings: np.ndarray,
    *,
    identities: Sequence[str] | np.ndarray,
    image_ids: Sequence[str],
    top_n: int,
    precision: str,
    layer_calls: Mapping[str, int],
    target: str = TARGET_CR,
    method: str = "greedy",
    linear_top_n: int | None = None,
    folds: int = DEFAULT_FOLDS,
    eps: float = DEFAULT_EPS,
    extra_settings: Mapping[str, object] | None = None,
    sources: Sequence[int] | np.ndarray | None = None,
) -> CalibrationArtifact:
    """Calibration against a labelled ``target`` (module doc): the same utilities / greedy (or linear
    observer) / artifact as the perturbation calibration, with ``settings = {"target", "top_n", <target>:
    {images_used, images_without_target, identities_used, ...extra_settings}}``. ``ValueError`` when the
    inputs do not align or fewer than 3 images have a defined target. ``sources``: rows that are degraded
    copies point at their reference row (:func:`genuine_similarity`); the cross-validation groups are still
    the identities, so a copy is never on the other side of a split from its source."""
    if len(image_ids) != len(identities):
        raise ValueError(f"{len(image_ids)} image ids for {len(identities)} images")
    observations, used = labelled_observations(
        layer_norms, embeddings, identities, target, eps=eps, sources=sources
    )
    digest = CalibrationSetDigest()
    digest.add_ids(np.asarray(image_ids, dtype=object)[used])
    labels = np.asarray(identities, dtype=object)
    return build_artifact(
        model,
        layer_names,
        observations,
        target_settings(target, used, labels, eps, **dict(extra_settings or {})),
        top_n=top_n,
        calibration_set=digest.result(),
        precision=precision,
        layer_calls=layer_calls,
        method=method,
        groups=labels[used].astype(str),
        linear_top_n=linear_top_n,
        folds=folds,
    )
