"""The evaluate threshold table against a brute-force loop over images and pairs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from froq_ray.evaluation.thresholds import pairs_of, threshold_table, threshold_tables


def data(seed=0, n_ids=12, per_id=4):
    rng = np.random.default_rng(seed)
    ids = np.repeat([f"p{k}" for k in range(n_ids)], per_id)
    centres = rng.normal(size=(n_ids, 16))
    emb = centres[np.repeat(np.arange(n_ids), per_id)] + rng.normal(size=(len(ids), 16))
    quality = np.round(rng.normal(size=len(ids)), 1)  # rounded: ties at the thresholds
    return emb.astype(np.float32), ids, quality


def test_threshold_table_equals_a_brute_force_loop():
    emb, ids, quality = data()
    unit = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    pairs = list(itertools.combinations(range(len(ids)), 2))
    sims = {(a, b): unit[a] @ unit[b] for a, b in pairs}
    impostor = sorted(s for (a, b), s in sims.items() if ids[a] != ids[b])
    fmr = 0.01
    k = int(np.floor(fmr * len(impostor)))
    tau = np.nextafter(impostor[len(impostor) - 1 - k], np.inf)  # #{s >= tau} <= fmr * I
    assert sum(s >= tau for s in impostor) <= fmr * len(impostor)
    percentile = np.argsort(np.argsort(quality)) / len(quality) * 100
    i, j, s, g = pairs_of(emb, ids)
    table = threshold_table(
        quality, i, j, s, genuine=g, percentile=percentile, fractions=(0.0, 0.05, 0.2, 0.3), fmr=fmr
    )
    for row in table.itertuples():
        t = sorted(quality)[int(np.floor(row.drop_fraction * len(quality)))]
        kept = {n for n in range(len(ids)) if quality[n] >= t}
        genuine = [sims[p] for p in pairs if ids[p[0]] == ids[p[1]] and set(p) <= kept]
        assert row.quality_threshold == t
        assert row.dropped_fraction == pytest.approx(1 - len(kept) / len(ids))
        assert row.genuine_pairs_kept == len(genuine)
        assert row.fnmr == pytest.approx(np.mean([x < tau for x in genuine]))
        assert row.percentile_threshold == pytest.approx(min(percentile[n] for n in kept))
        assert row.tau == pytest.approx(tau)
    assert table["fnmr"].notna().all() and len(table) == 4
    both = threshold_tables(emb, ids, {"a": quality, "b": -quality}, {"a": percentile}, fmr=fmr)
    assert list(both["method"].unique()) == ["a", "b"] and both["percentile_threshold"].isna().sum() == 5
    with pytest.raises(ValueError, match="drop fractions"):
        threshold_table(quality, i, j, s, genuine=g, fractions=(1.0,))
