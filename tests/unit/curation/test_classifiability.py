"""CCS (leave-one-out), NNCCS / nearest identity (blocked, own centre excluded) and CR vs brute force."""

from __future__ import annotations

import numpy as np
import torch

from froq_ray.curation.centres import CentreSums
from froq_ray.curation.classifiability import (
    NOTE_NO_OTHER_IDENTITY,
    NOTE_SINGLETON,
    NOTE_UNKNOWN_IDENTITY,
    CentreIndex,
    certainty_ratio,
    classifiability,
    nearest_other_centre,
)
from tests.unit.curation.test_centres import clustered


def unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def brute_force(x: np.ndarray, labels: np.ndarray):
    u = unit(x)
    names = sorted(set(labels))
    centres = {k: u[labels == k].mean(axis=0) for k in names}
    ccs, nnccs, nearest, own_is_nearest = [], [], [], []
    for i, label in enumerate(labels):
        others = [j for j in range(len(labels)) if labels[j] == label and j != i]
        ccs.append(cosine(u[i], u[others].mean(axis=0)) if others else np.nan)
        sims = {k: cosine(u[i], c) for k, c in centres.items()}
        own_is_nearest.append(max(sims, key=sims.get) == label)
        del sims[label]
        best = max(sims, key=sims.get)
        nnccs.append(sims[best])
        nearest.append(best)
    return np.array(ccs), np.array(nnccs), np.array(nearest, dtype=object), np.array(own_is_nearest)


def test_leave_one_out_ccs_nnccs_nearest_and_cr_match_brute_force():
    x, labels = clustered(n_ids=8, seed=3)
    ccs, nnccs, nearest, own_is_nearest = brute_force(x, labels)
    assert own_is_nearest.sum() > 5  # the exclusion of the own centre matters for these rows
    got = classifiability(x, labels, block_rows=3, block_centres=2)  # tiles cut rows and centres
    np.testing.assert_allclose(got.ccs, ccs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.nnccs, nnccs, rtol=1e-5, atol=1e-6)
    assert list(got.nearest_identity) == list(nearest)
    assert all(n != label for n, label in zip(got.nearest_identity, labels, strict=True))
    np.testing.assert_allclose(got.cr, ccs / (nnccs + 1 + 1e-9), rtol=1e-5, equal_nan=True)
    singleton = np.isnan(ccs)
    assert singleton.any() and (got.note[singleton] == NOTE_SINGLETON).all()
    assert np.isnan(got.cr[singleton]).all() and np.isfinite(got.nnccs[singleton]).all()
    assert np.equal(got.note[~singleton], None).all()
    counts = {k: int((labels == k).sum()) for k in set(labels)}
    assert got.identity_images.tolist() == [counts[k] for k in labels]


def test_leave_one_out_removes_the_self_similarity_of_a_pair():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    got = classifiability(x, ["a", "a", "b"])
    np.testing.assert_allclose(got.ccs[:2], [0.0, 0.0], atol=1e-7)  # each image vs the other one only
    np.testing.assert_allclose(got.nnccs[:2], [np.sqrt(0.5)] * 2, rtol=1e-6)


def test_nearest_other_centre_masks_only_the_own_column_and_breaks_ties_low():
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    best, nearest = nearest_other_centre(rows, np.array([0, 1, 3]), centres, block_rows=2, block_centres=3)
    np.testing.assert_allclose(best, [0.0, 1.0, 1.0], atol=1e-7)
    assert nearest.tolist() == [1, 2, 1]  # row 0: tie between 1 and 2 -> 1; row 1: own 1 masked -> 2


def test_one_identity_and_unknown_identities_give_nan_with_a_note():
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    got = classifiability(x, ["solo"] * len(x))
    assert np.isnan(got.nnccs).all() and np.isnan(got.cr).all() and np.isfinite(got.ccs).all()
    assert (got.note == NOTE_NO_OTHER_IDENTITY).all() and np.equal(got.nearest_identity, None).all()
    index = CentreIndex(CentreSums.from_chunk(np.eye(3, dtype=np.float32), ["a", "b", "c"]))
    scored = index.score(np.eye(3, dtype=np.float32)[:1], ["stranger"])
    assert (
        scored.note[0] == NOTE_UNKNOWN_IDENTITY and np.isnan(scored.ccs[0]) and scored.identity_images[0] == 0
    )


def test_certainty_ratio_formula():
    cr = certainty_ratio(np.array([0.5, -0.2, np.nan, 0.3]), np.array([0.2, 0.4, 0.1, -1.0]), eps=1e-9)
    np.testing.assert_allclose(cr[[0, 1]], [0.5 / 1.2, -0.2 / 1.4], rtol=1e-6)
    assert np.isnan(cr[2]) and cr[3] == np.float32(0.3 / 1e-9)


def test_half_precision_centres_give_the_same_nearest_identity():
    x, labels = clustered(n_ids=8, seed=5)
    full = classifiability(x, labels, block_rows=5, block_centres=3)
    half = classifiability(x, labels, dtype=torch.bfloat16, block_rows=5, block_centres=3)
    np.testing.assert_allclose(half.nnccs, full.nnccs, atol=5e-3)  # bf16: 8-bit mantissa
    np.testing.assert_array_equal(half.ccs, full.ccs)  # CCS is computed on the host in float64
    np.testing.assert_array_equal(half.nearest, full.nearest)  # no near-ties in this data
