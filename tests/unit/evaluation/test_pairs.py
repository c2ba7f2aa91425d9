"""Pairs: the View-2 parser on synthetic files, and the streamed all-pairs enumeration against brute force."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from froq_ray.evaluation.pairs import (
    PairsFormatError,
    all_pairs_similarity,
    plan_pairs,
    read_lfw_pairs,
)

# ---------------------------------------------------------------------------------------------------- parser

GOOD = """2\t2
Ann\t1\t2
Bob\t1\t3
Ann\t1\tBob\t2
Cy\t1\tAnn\t2
Cy\t1\t2
Bob\t2\t3
Ann\t2\tCy\t2
Bob\t1\tCy\t1
"""

IMAGES = {"Ann": 2, "Bob": 3, "Cy": 2}


def _make_tree(root: Path, images: dict[str, int]) -> None:
    for name, count in images.items():
        (root / name).mkdir(parents=True)
        for k in range(1, count + 1):
            (root / name / f"{name}_{k:04d}.jpg").write_bytes(b"x")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


def test_reads_view2_layout(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _make_tree(root, IMAGES)
    df = read_lfw_pairs(_write(tmp_path, GOOD), root)
    assert list(df.columns) == ["fold", "path_a", "path_b", "genuine"]
    assert df["fold"].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]
    assert df["genuine"].tolist() == [True, True, False, False, True, True, False, False]
    assert df["path_a"][0] == str(root / "Ann" / "Ann_0001.jpg")
    assert df["path_b"][0] == str(root / "Ann" / "Ann_0002.jpg")
    assert df["path_a"][3] == str(root / "Cy" / "Cy_0001.jpg")
    assert df["path_b"][3] == str(root / "Ann" / "Ann_0002.jpg")
    assert df["path_b"][5] == str(root / "Bob" / "Bob_0003.jpg")


def test_spaces_and_trailing_blank_lines_are_accepted(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _make_tree(root, IMAGES)
    df = read_lfw_pairs(_write(tmp_path, GOOD.replace("\t", " ") + "\n\n"), root)
    assert len(df) == 8


@pytest.mark.parametrize(
    ("line_no", "bad", "needle"),
    [
        (3, "Bob\t1\tAnn\t3", "same-identity"),  # a 4-field line among the genuine ones
        (4, "Ann\t1\tBob", "different-identity"),  # a 3-field line among the impostors
        (7, "Bob\tx\t3", "'x'"),
        (8, "Ann\t2\tCy\t0", "'0'"),
    ],
)
def test_malformed_line_reports_its_number(tmp_path: Path, line_no: int, bad: str, needle: str) -> None:
    lines = GOOD.splitlines()
    lines[line_no - 1] = bad
    with pytest.raises(PairsFormatError) as err:
        read_lfw_pairs(_write(tmp_path, "\n".join(lines) + "\n"), tmp_path, check_files=False)
    assert f"pairs.txt:{line_no}:" in str(err.value)
    assert needle in str(err.value)


def test_bad_header_and_wrong_line_count(tmp_path: Path) -> None:
    with pytest.raises(PairsFormatError, match=":1: header"):
        read_lfw_pairs(_write(tmp_path, "two\t2\n" + GOOD.split("\n", 1)[1]), tmp_path, check_files=False)
    with pytest.raises(PairsFormatError, match="found 7 .*ends early"):
        read_lfw_pairs(_write(tmp_path, "\n".join(GOOD.splitlines()[:-1])), tmp_path, check_files=False)
    with pytest.raises(PairsFormatError, match="line 10 is extra"):
        read_lfw_pairs(_write(tmp_path, GOOD + "Ann\t1\t2\n"), tmp_path, check_files=False)


def test_missing_image_is_named_with_its_line(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _make_tree(root, {"Ann": 2, "Bob": 2, "Cy": 2})  # Bob_0003 is missing, first used on line 3
    with pytest.raises(FileNotFoundError) as err:
        read_lfw_pairs(_write(tmp_path, GOOD), root)
    assert "Bob_0003.jpg (line 3)" in str(err.value)
    assert "1 referenced images" in str(err.value)


def test_real_lfw_dev_pairs(lfw_dev_dir: Path) -> None:
    df = read_lfw_pairs(lfw_dev_dir / "pairs.txt", lfw_dev_dir / "images")
    assert len(df) == 3000
    per_fold = df.groupby("fold")["genuine"].agg(["sum", "size"])
    assert per_fold.index.tolist() == [1, 2, 3, 4, 5]
    assert per_fold.values.tolist() == [[300, 600]] * 5
    same_name = df["path_a"].map(lambda p: Path(p).parent.name) == df["path_b"].map(
        lambda p: Path(p).parent.name
    )
    assert (same_name == df["genuine"]).all()


# ---------------------------------------------------------------------------------------------- all pairs


def _toy_set(n: int = 37, d: int = 8, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    ids = np.array([f"id{k}" for k in rng.integers(0, 9, size=n)])
    return emb, ids


def _brute_cosine(emb: np.ndarray, a: int, b: int) -> float:
    x, y = emb[a].astype(np.float64), emb[b].astype(np.float64)
    return float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)))


def _collect(blocks) -> dict[tuple[int, int], tuple[float, bool]]:
    seen: dict[tuple[int, int], tuple[float, bool]] = {}
    for blk in blocks:
        assert blk.sim.dtype == np.float64 and blk.genuine.dtype == bool
        assert len(blk.sim) == len(blk.genuine) == len(blk.i) == len(blk.j)
        for s, g, i, j in zip(
            blk.sim.tolist(), blk.genuine.tolist(), blk.i.tolist(), blk.j.tolist(), strict=True
        ):
            assert i < j and (i, j) not in seen
            seen[(i, j)] = (s, g)
    return seen


@pytest.mark.parametrize("block", [1, 5, 8, 36, 37, 4096])
def test_blocked_pairs_equal_brute_force(block: int) -> None:
    emb, ids = _toy_set()
    n = len(ids)
    got = _collect(all_pairs_similarity(emb, ids, block=block))
    expected = {(a, b): (_brute_cosine(emb, a, b), ids[a] == ids[b]) for a, b in combinations(range(n), 2)}
    assert set(got) == set(expected) and len(got) == n * (n - 1) // 2
    assert sum(g for _, g in got.values()) == sum(g for _, g in expected.values())
    for key, (s, g) in expected.items():
        assert got[key][1] == g
        assert got[key][0] == pytest.approx(s, abs=1e-12)


def test_plan_counts_match_enumeration() -> None:
    emb, ids = _toy_set()
    plan = plan_pairs(ids)
    got = _collect(all_pairs_similarity(emb, ids, block=7))
    n_gen = sum(g for _, g in got.values())
    assert not plan.impostors_sampled
    assert (plan.n_genuine, plan.n_impostor) == (n_gen, len(got) - n_gen)


def test_zero_embedding_has_zero_similarity() -> None:
    emb = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    got = _collect(all_pairs_similarity(emb, ["a", "b", "b"]))
    assert got[(0, 1)] == (0.0, False) and got[(0, 2)] == (0.0, False)
    assert got[(1, 2)][0] == pytest.approx(0.6) and got[(1, 2)][1]


def test_sampled_impostors_are_distinct_cross_identity_and_seeded() -> None:
    emb, ids = _toy_set(n=60)
    plan = plan_pairs(ids, impostors="sample", n_impostors=150)
    assert plan.impostors_sampled and plan.n_impostor == 150
    got = _collect(all_pairs_similarity(emb, ids, block=4, impostors="sample", n_impostors=150, seed=1))
    genuine = {k for k, (_, g) in got.items() if g}
    impostor = {k for k, (_, g) in got.items() if not g}
    all_genuine = {(a, b) for a, b in combinations(range(60), 2) if ids[a] == ids[b]}
    assert genuine == all_genuine and plan.n_genuine == len(all_genuine)
    assert len(impostor) == 150 and all(ids[a] != ids[b] for a, b in impostor)
    for a, b in impostor | genuine:
        assert got[(a, b)][0] == pytest.approx(_brute_cosine(emb, a, b), abs=1e-12)
    again = _collect(all_pairs_similarity(emb, ids, block=4, impostors="sample", n_impostors=150, seed=1))
    other = _collect(all_pairs_similarity(emb, ids, block=4, impostors="sample", n_impostors=150, seed=2))
    assert again == got
    assert {k for k, (_, g) in other.items() if not g} != impostor


def test_asking_for_every_impostor_enumerates_them() -> None:
    emb, ids = _toy_set(n=20)
    plan = plan_pairs(ids, impostors="sample", n_impostors=10**6)
    assert not plan.impostors_sampled and plan.n_pairs == 190
    assert len(_collect(all_pairs_similarity(emb, ids, impostors="sample", n_impostors=10**6))) == 190
