"""Class centres: streaming partial sums vs a naive numpy mean; partial-sum merges == one pass."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from froq_ray.curation.centres import CentreAccumulator, CentreSums, centre_sums, l2_normalise, merge_partials


def clustered(n_ids: int = 7, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw (unnormalised) embeddings around one direction per identity, 1..5 images each, shuffled."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    labels = np.concatenate([[f"id{k:02d}"] * (1 + k % 5) for k in range(n_ids)]).astype(object)
    index = np.array([int(s[2:]) for s in labels])
    x = centres[index] + 0.6 * rng.normal(size=(labels.size, dim))
    x *= rng.uniform(0.5, 3.0, size=(labels.size, 1))  # raw norms differ: centres must use unit vectors
    order = rng.permutation(labels.size)
    return x[order].astype(np.float32), labels[order]


def naive_centres(x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return {name: unit[labels == name].mean(axis=0) for name in sorted(set(labels))}


def test_centres_equal_the_mean_of_unit_embeddings():
    x, labels = clustered()
    sums = CentreSums.from_chunk(x, labels)
    naive = naive_centres(x, labels)
    assert list(sums.identities) == list(naive)
    np.testing.assert_allclose(sums.means(), np.stack(list(naive.values())), rtol=1e-6, atol=1e-7)
    assert sums.counts.tolist() == [int((labels == k).sum()) for k in naive]
    directions = sums.directions()
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-6)


def test_partial_sums_merged_in_any_order_equal_one_pass():
    x, labels = clustered(n_ids=9, seed=1)
    single = CentreSums.from_chunk(x, labels)
    cuts = [0, 4, 5, 13, labels.size]  # chunks share identities, one chunk has a single row
    parts = [CentreSums.from_chunk(x[a:b], labels[a:b]) for a, b in pairwise(cuts)]
    for merged in (merge_partials(parts), merge_partials(parts[::-1])):
        assert list(merged.identities) == list(single.identities)
        np.testing.assert_array_equal(merged.counts, single.counts)
        np.testing.assert_allclose(merged.sums, single.sums, rtol=1e-6, atol=1e-6)  # chunk sums are float32


def test_streaming_accumulator_equals_one_pass_when_it_merges_often():
    x, labels = clustered(n_ids=11, seed=2)
    single = CentreSums.from_chunk(x, labels)
    accumulator = CentreAccumulator(min_buffer_rows=1)  # merge at almost every chunk
    for start in range(0, labels.size, 3):
        accumulator.add(CentreSums.from_chunk(x[start : start + 3], labels[start : start + 3]))
    merged = accumulator.result()
    np.testing.assert_array_equal(merged.counts, single.counts)
    np.testing.assert_allclose(merged.sums, single.sums, rtol=1e-6, atol=1e-6)  # chunk sums are float32
    chunks = ((x[s : s + 4], labels[s : s + 4]) for s in range(0, labels.size, 4))
    np.testing.assert_allclose(centre_sums(chunks).sums, single.sums, rtol=1e-6, atol=1e-6)


def test_index_of_and_bad_inputs():
    x, labels = clustered(n_ids=3)
    sums = CentreSums.from_chunk(x, labels)
    assert sums.index_of(["id01", "nobody", "id00"]).tolist() == [1, -1, 0]
    with pytest.raises(ValueError, match="zero or not finite"):
        l2_normalise(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="different embedding sizes"):
        merge_partials([sums, CentreSums.from_chunk(np.ones((1, 3)), ["a"])])
    with pytest.raises(ValueError, match="no embeddings"):
        centre_sums([])
