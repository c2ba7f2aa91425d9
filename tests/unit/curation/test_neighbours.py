"""faiss near-duplicates, identity merges and eval overlap == float64 brute force with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from froq_ray.curation.centres import CentreSums, l2_normalise
from froq_ray.curation.classifiability import nearest_other_centre
from froq_ray.curation.neighbours import (
    EvalOverlap,
    InnerProductIndex,
    merge_suggestions,
    near_duplicates,
)


def _clustered(seed: int, n: int = 300, dim: int = 16, groups: int = 40) -> np.ndarray:
    """Unit rows in tight groups (so thresholds near 0.9 find many pairs), with exact copies (ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))
    x = centres[rng.integers(0, groups, n)] + 0.25 * rng.normal(size=(n, dim))
    x[10] = x[3]  # exact duplicates: cosine 1 to each other, equal cosines (a tie) to every other row
    x[11] = x[3]
    return l2_normalise(x.astype(np.float32))


def _brute_pairs(unit: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    sims = unit.astype(np.float64) @ unit.astype(np.float64).T
    a, b = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(a.tolist(), b.tolist(), strict=True))


@pytest.mark.parametrize("chunk_rows", [1000, 37])
@pytest.mark.parametrize("threshold", [0.8, 0.95])
def test_near_duplicates_equal_brute_force(chunk_rows: int, threshold: float) -> None:
    unit = _clustered(0)
    pairs = near_duplicates(unit, threshold, chunk_rows=chunk_rows)
    assert set(zip(pairs.row_a, pairs.row_b, strict=True)) == _brute_pairs(unit, threshold)
    assert len(pairs) == len(_brute_pairs(unit, threshold)) > 0  # each pair once
    assert (pairs.row_a < pairs.row_b).all()
    expected = np.einsum(
        "nd,nd->n", unit[pairs.row_a].astype(np.float64), unit[pairs.row_b].astype(np.float64)
    )
    np.testing.assert_allclose(pairs.cosine, expected, rtol=0, atol=1e-12)
    # the three copies of row 3 are all pairs of each other, found once each
    assert {(3, 10), (3, 11), (10, 11)} <= set(zip(pairs.row_a, pairs.row_b, strict=True))


def test_knn_path_equals_range_path() -> None:
    """The GPU search path (k-NN with growing k) on a CPU index gives the same pairs as range search."""
    unit = _clustered(1)
    ranged = InnerProductIndex(unit.shape[1], gpu=False, method="range")
    knn = InnerProductIndex(unit.shape[1], gpu=False, method="knn")
    for index in (ranged, knn):
        index.add(unit)
    got_range = ranged.range_pairs(unit, 0.7)
    got_knn = knn.range_pairs(unit, 0.7)
    for left, right in zip(got_range, got_knn, strict=True):
        np.testing.assert_array_equal(left, right)
    brute = unit.astype(np.float64) @ unit.astype(np.float64).T
    assert len(got_range[0]) == int((brute >= 0.7).sum())


def test_threshold_is_inclusive() -> None:
    """A pair exactly at the threshold is reported (faiss's own range search is strict)."""
    x = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    cos = float(x[0].astype(np.float64) @ x[1].astype(np.float64))
    assert list(near_duplicates(x, cos).itertuples(index=False)) == [(0, 1, cos)]
    assert near_duplicates(x, np.nextafter(cos, 2.0)).empty


def _identities(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    unit = _clustered(seed, n=200, groups=25)
    labels = np.array([f"id{int(i):03d}" for i in rng.integers(0, 60, len(unit))], dtype=object)
    labels[0] = "zz_single"  # an identity with one image
    return unit, labels


@pytest.mark.parametrize("threshold", [0.5, 0.85])
def test_merge_suggestions_equal_brute_force_once_per_pair(threshold: float) -> None:
    unit, labels = _identities(2)
    table = CentreSums.from_chunk(unit, labels).table()
    got = merge_suggestions(table, threshold)
    directions = table.directions.astype(np.float64)
    sims = directions @ directions.T
    a, b = np.nonzero(np.triu(sims >= threshold, k=1))
    expected = {(table.identities[i], table.identities[j]) for i, j in zip(a, b, strict=True)}
    got_pairs = list(zip(got.identity_a, got.identity_b, strict=True))
    assert set(got_pairs) == expected and len(got_pairs) == len(expected) > 0
    assert all(x < y for x, y in got_pairs)  # each unordered pair once, in one orientation
    assert not {(y, x) for x, y in got_pairs} & set(got_pairs)
    assert (np.diff(got.cosine.to_numpy()) <= 0).all()
    lookup = dict(zip(table.identities, table.counts, strict=True))
    assert [lookup[x] for x in got.identity_a] == got.images_a.tolist()
    assert "zz_single" in set(table.identities)


def test_eval_overlap_equals_brute_force() -> None:
    unit, labels = _identities(3)
    sums = CentreSums.from_chunk(unit, labels)
    table = sums.table()
    rng = np.random.default_rng(9)
    eval_unit = l2_normalise(
        np.concatenate([unit[[5, 0]], rng.normal(size=(30, unit.shape[1]))]).astype(np.float32)
    )
    names = [f"eval/{i}.jpg" for i in range(len(eval_unit))]
    threshold = 0.97
    overlap = EvalOverlap(table, eval_unit, names, threshold)
    own = table.index_of(labels)
    for start in range(0, len(unit), 23):  # streamed in chunks
        stop = start + 23
        overlap.add_images(unit[start:stop], own[start:stop], np.arange(start, min(stop, len(unit))))
    got = overlap.result().set_index("identity")

    img_sims = unit.astype(np.float64) @ eval_unit.astype(np.float64).T
    cen_sims = table.directions.astype(np.float64) @ eval_unit.astype(np.float64).T
    for k, name in enumerate(table.identities):
        rows = np.flatnonzero(labels == name)
        best_image = img_sims[rows].max()
        by_image = best_image >= threshold
        by_centre = cen_sims[k].max() >= threshold
        assert got.loc[name, "overlap"] == (by_image or by_centre), name
        assert got.loc[name, "image_cosine"] == pytest.approx(best_image, abs=1e-12)
        assert got.loc[name, "centre_cosine"] == pytest.approx(cen_sims[k].max(), abs=1e-12)
        assert got.loc[name, "image_row"] in rows[img_sims[rows].max(axis=1) == best_image]
    # rows 5 and 0 are in the evaluation set: their identities overlap by image (0 is the one-image identity,
    # whose centre is that image, so it overlaps by both)
    assert got.loc[labels[5], "overlap_by"] in ("image", "centre+image")
    assert got.loc["zz_single", "overlap_by"] == "centre+image"
    assert got.loc["zz_single", "image_nearest_eval"] == "eval/1.jpg"


def test_faiss_top1_matches_hand_written_nearest_other_centre() -> None:
    """The faiss search and the blocked torch search agree on the nearest other centre (k=2, own dropped)."""
    unit, labels = _identities(4)
    table = CentreSums.from_chunk(unit, labels).table()
    own = table.index_of(labels)
    value, nearest = nearest_other_centre(unit, own, torch.from_numpy(table.directions), block_rows=50)
    index = InnerProductIndex(table.dim, gpu=False)
    index.add(table.directions)
    got_q, got_id, got_cos = index.range_pairs(unit, -1.0)  # every pair: brute force through faiss
    sims = np.full((len(unit), len(table)), -np.inf)
    sims[got_q, got_id] = got_cos
    sims[np.arange(len(unit)), own] = -np.inf
    np.testing.assert_array_equal(sims.argmax(axis=1), nearest)
    np.testing.assert_allclose(sims.max(axis=1), value, atol=1e-6)
