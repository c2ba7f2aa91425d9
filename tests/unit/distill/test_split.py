"""Train/validation split: keys, seeded stable hash, no identity or image on both sides."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from froq_ray.distill.split import check_no_leak, split_key_column, validation_mask


def _sides(keys, mask) -> dict[str, set[bool]]:
    sides: dict[str, set[bool]] = {}
    for key, side in zip(keys, mask, strict=True):
        sides.setdefault(key, set()).add(bool(side))
    return sides


def test_split_key_prefers_identity_then_source_then_path():
    paths = ["/d/a1.jpg", "/d/a2.jpg", "/d/b.jpg", "/d/c.jpg", "/d/e.jpg"]
    identities = ["alice", "alice", None, float("nan"), ""]
    sources = ["/src/a1.jpg", "/src/a2.jpg", "/src/b.jpg", None, None]
    keys = split_key_column(paths, identities, sources)
    assert keys.dtype == object
    assert keys.tolist() == ["alice", "alice", "/src/b.jpg", "/d/c.jpg", "/d/e.jpg"]
    assert split_key_column(paths).tolist() == paths
    assert split_key_column(paths, source_paths=sources).tolist()[:3] == sources[:3]
    with pytest.raises(ValueError, match="identities has 1 entries for 5 paths"):
        split_key_column(paths, identities=["x"])


def test_mask_is_the_seeded_sha256_position():
    keys = [f"person_{i}" for i in range(50)]
    mask = validation_mask(keys, 0.3, seed=7)
    expected = [
        int.from_bytes(hashlib.sha256(f"7:{k}".encode()).digest()[:8], "big") / 2**64 < 0.3 for k in keys
    ]
    assert mask.dtype == bool and mask.tolist() == expected
    assert validation_mask(list(reversed(keys)), 0.3, seed=7).tolist() == expected[::-1]


def test_fraction_is_respected_and_seed_changes_the_split():
    keys = [f"img_{i:05d}.jpg" for i in range(10_000)]
    first = validation_mask(keys, 0.2, seed=0)
    assert abs(first.mean() - 0.2) < 0.02
    again = validation_mask(keys, 0.2, seed=0)
    other = validation_mask(keys, 0.2, seed=1)
    assert np.array_equal(first, again)
    assert abs(other.mean() - 0.2) < 0.02 and (first != other).mean() > 0.2


def test_an_identity_is_never_on_both_sides():
    identities = [f"person_{i % 300}" for i in range(1500)]
    paths = [f"/lfw/{name}/{i}.jpg" for i, name in enumerate(identities)]
    keys = split_key_column(paths, identities)
    mask = validation_mask(keys, 0.25, seed=3)
    assert 0 < mask.sum() < len(mask)
    assert all(len(sides) == 1 for sides in _sides(identities, mask).values())
    check_no_leak(keys, mask)


def test_degraded_copies_follow_their_source_image():
    sources = [f"/raw/{i}.jpg" for i in range(400) for _ in range(4)]
    paths = [f"{src}#degrade={j}" for j, src in enumerate(sources)]
    keys = split_key_column(paths, None, sources)
    mask = validation_mask(keys, 0.3, seed=11)
    assert 0 < mask.sum() < len(mask)
    assert all(len(sides) == 1 for sides in _sides(sources, mask).values())
    check_no_leak(keys, mask)


def test_fraction_bounds_and_leak_check():
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            validation_mask(["a"], fraction, seed=0)
    with pytest.raises(ValueError, match="leak: split keys on both sides: b"):
        check_no_leak(["a", "b", "b", "c"], [True, True, False, False])
    with pytest.raises(ValueError, match="3 keys but 2 mask entries"):
        check_no_leak(["a", "b", "c"], [True, False])
