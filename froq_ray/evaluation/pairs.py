"""Comparison pairs: the LFW View-2 pairs file, and every pair of a labelled image set, streamed in blocks.

``all_pairs_similarity`` enumerates the i < j pairs of ``N`` embeddings by tiles of a blocked matrix product
of the L2-normalised embeddings, so a consumer sees one tile of pairs at a time and no list of all pairs (or of
their indices) ever exists. Above ``EXHAUSTIVE_PAIR_LIMIT`` pairs (about 6,300 images) the impostor side switches
to a seeded uniform sample of cross-identity pairs while every genuine pair is still enumerated; see
``PairPlan``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import UserError

# All i < j pairs are enumerated up to this many pairs (N = 6,325 images); above it impostors are sampled.
# The EDC keeps every pair in memory (about 17 bytes per pair plus 4 per quality method), so this bounds
# the evaluation at a few hundred MB; 20M impostors resolve FMR = 1e-3 with 20,000 impostors above tau.
EXHAUSTIVE_PAIR_LIMIT = 20_000_000
# Impostor pairs drawn when sampling: 5M pairs leave 5,000 impostors above the FMR = 1e-3 threshold,
# a relative standard error of the achieved FMR of about 1.4%.
DEFAULT_SAMPLED_IMPOSTORS = 5_000_000

PAIR_COLUMNS = ("fold", "path_a", "path_b", "genuine")
_INDEX = re.compile(r"^[0-9]+$")


class PairsFormatError(UserError, ValueError):
    """The pairs file does not follow the View-2 layout; the message names the file and line."""


# --------------------------------------------------------------------------------------------------------------
# LFW View-2 pairs file
# --------------------------------------------------------------------------------------------------------------


def lfw_image_path(images_root: str | os.PathLike, name: str, index: int) -> Path:
    """``<root>/<Name>/<Name>_<index:04d>.jpg``, LFW's file naming."""
    return Path(images_root) / name / f"{name}_{index:04d}.jpg"


def _parse_index(token: str, pairs_file: str, line_no: int) -> int:
    if not _INDEX.match(token) or int(token) < 1:
        raise PairsFormatError(f"{pairs_file}:{line_no}: image number {token!r} is not a positive integer")
    return int(token)


def _parse_header(line: str, pairs_file: str) -> tuple[int, int]:
    fields = line.split()
    if len(fields) != 2 or not all(_INDEX.match(f) for f in fields):
        raise PairsFormatError(f"{pairs_file}:1: header must be '<folds><TAB><pairs per side>', got {line!r}")
    n_folds, per_side = int(fields[0]), int(fields[1])
    if n_folds < 1 or per_side < 1:
        raise PairsFormatError(f"{pairs_file}:1: header numbers must be positive, got {line!r}")
    return n_folds, per_side


def _parse_pair_line(
    fields: list[str], genuine: bool, pairs_file: str, line_no: int
) -> tuple[str, int, str, int]:
    if genuine:
        if len(fields) != 3:
            raise PairsFormatError(
                f"{pairs_file}:{line_no}: expected a same-identity line 'Name i j' (3 fields), got {len(fields)}"
                f" fields: {' '.join(fields)!r}"
            )
        name, i, j = fields
        return name, _parse_index(i, pairs_file, line_no), name, _parse_index(j, pairs_file, line_no)
    if len(fields) != 4:
        raise PairsFormatError(
            f"{pairs_file}:{line_no}: expected a different-identity line 'NameA i NameB j' (4 fields), got"
            f" {len(fields)} fields: {' '.join(fields)!r}"
        )
    name_a, i, name_b, j = fields
    return name_a, _parse_index(i, pairs_file, line_no), name_b, _parse_index(j, pairs_file, line_no)


def read_lfw_pairs(
    pairs_file: str | os.PathLike, images_root: str | os.PathLike, check_files: bool = True
) -> pd.DataFrame:
    """Read an LFW View-2 pairs file into a DataFrame with columns ``fold, path_a, path_b, genuine``.

    Layout: a header ``<folds><TAB><n>``, then per fold ``n`` same-identity lines ``Name i j`` followed by
    ``n`` different-identity lines ``NameA i NameB j`` (fields separated by tabs or spaces). ``fold`` counts
    from 1 as the protocol does (fold 1 is the first block of 2n lines); paths are ``str`` under
    ``images_root``. A malformed line raises ``PairsFormatError`` with its 1-based line number; with
    ``check_files``, missing images raise ``FileNotFoundError`` naming them.
    """
    pairs_file = os.fspath(pairs_file)
    with open(pairs_file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    numbered = [(no, line) for no, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise PairsFormatError(f"{pairs_file}: empty pairs file")
    if numbered[0][0] != 1:
        raise PairsFormatError(f"{pairs_file}:1: the first line must be the header, found a blank line")
    n_folds, per_side = _parse_header(numbered[0][1], pairs_file)
    body = numbered[1:]
    expected = n_folds * 2 * per_side
    if len(body) != expected:
        where = f"line {body[expected][0]} is extra" if len(body) > expected else "the file ends early"
        raise PairsFormatError(
            f"{pairs_file}: header announces {n_folds} folds x {2 * per_side} pairs = {expected} pair lines,"
            f" found {len(body)} ({where})"
        )
    rows: list[tuple[int, str, str, bool, int]] = []
    for k, (line_no, line) in enumerate(body):
        fold, within = divmod(k, 2 * per_side)
        genuine = within < per_side
        name_a, i, name_b, j = _parse_pair_line(line.split(), genuine, pairs_file, line_no)
        path_a = lfw_image_path(images_root, name_a, i)
        path_b = lfw_image_path(images_root, name_b, j)
        rows.append((fold + 1, str(path_a), str(path_b), genuine, line_no))
    if check_files:
        _check_files_exist(rows, pairs_file)
    frame = pd.DataFrame([r[:4] for r in rows], columns=list(PAIR_COLUMNS))
    frame["fold"] = frame["fold"].astype(np.int64)
    frame["genuine"] = frame["genuine"].astype(bool)
    return frame


def _check_files_exist(rows: list[tuple[int, str, str, bool, int]], pairs_file: str) -> None:
    missing: list[str] = []
    seen: set[str] = set()
    for _, path_a, path_b, _, line_no in rows:
        for path in (path_a, path_b):
            if path not in seen:
                seen.add(path)
                if not os.path.isfile(path):
                    missing.append(f"{path} (line {line_no})")
    if missing:
        shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{pairs_file}: {len(missing)} referenced images are missing: {shown}")


# --------------------------------------------------------------------------------------------------------------
# All pairs of a labelled set, streamed
# --------------------------------------------------------------------------------------------------------------


class PairBlock(NamedTuple):
    """One block of pairs: cosine similarity (float64), genuine flag, and the image indices (i < j)."""

    sim: np.ndarray
    genuine: np.ndarray
    i: np.ndarray
    j: np.ndarray


@dataclass(frozen=True)
class PairPlan:
    """How many pairs ``all_pairs_similarity`` yields, and whether impostors are sampled."""

    n_images: int
    n_genuine: int
    n_impostor: int
    impostors_sampled: bool
    n_impostor_population: int

    @property
    def n_pairs(self) -> int:
        return self.n_genuine + self.n_impostor


@dataclass
class CollectedPairs:
    """All ``P`` pairs of a set in stream order (``protocol.collect_pairs``): ``similarity`` float64 (P,),
    ``genuine`` bool (P,), per method the pair-quality rank ``pair_rank[name]`` (uint16 / uint32 (P,)), the
    ``plan``, and when kept the identity codes (int32 (P,), 0 .. ``n_identities`` - 1, sorted-label order) of
    each pair's two images."""

    similarity: np.ndarray
    genuine: np.ndarray
    pair_rank: dict[str, np.ndarray]
    plan: PairPlan
    identity_a: np.ndarray | None = None
    identity_b: np.ndarray | None = None
    n_identities: int = 0


def identity_codes(identities: Sequence | np.ndarray) -> np.ndarray:
    """Identity labels of any hashable type -> int64 codes (equal labels, equal codes)."""
    _, codes = np.unique(np.asarray(identities), return_inverse=True)
    return codes.astype(np.int64).reshape(-1)


def plan_pairs(
    identities: Sequence | np.ndarray,
    impostors: str = "auto",
    n_impostors: int = DEFAULT_SAMPLED_IMPOSTORS,
) -> PairPlan:
    """Count the pairs of a labelled set and decide between all impostors and a sample.

    ``impostors``: ``"all"`` enumerates every cross-identity pair, ``"sample"`` draws ``n_impostors`` distinct
    ones (all of them, enumerated, if there are not more), ``"auto"`` samples only when the set has more than
    ``EXHAUSTIVE_PAIR_LIMIT`` pairs in all.
    """
    if impostors not in ("auto", "all", "sample"):
        raise ValueError(f"impostors must be 'auto', 'all' or 'sample', got {impostors!r}")
    codes = identity_codes(identities)
    n = codes.size
    sizes = np.bincount(codes).astype(np.int64) if n else np.zeros(0, np.int64)
    n_all = n * (n - 1) // 2
    n_genuine = int((sizes * (sizes - 1) // 2).sum())
    population = n_all - n_genuine
    if impostors != "all" and n_impostors < 1:
        raise ValueError(f"n_impostors must be positive, got {n_impostors}")
    wants_sample = impostors == "sample" or (impostors == "auto" and n_all > EXHAUSTIVE_PAIR_LIMIT)
    sample = wants_sample and n_impostors < population  # asking for at least all of them means all of them
    return PairPlan(n, n_genuine, n_impostors if sample else population, sample, population)


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64; a zero row stays zero (similarity 0 to everything)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (N, D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 else np.int64


def _triangle_tiles(start: int, stop: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """Tiles (r0, r1, c0, c1) covering the upper triangle of [start, stop)^2, diagonal tiles included."""
    for r0 in range(start, stop, block):
        r1 = min(r0 + block, stop)
        for c0 in range(r0, stop, block):
            yield r0, r1, c0, min(c0 + block, stop)


def _tile_pairs(unit: np.ndarray, codes: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> PairBlock:
    """All pairs (i, j) with r0 <= i < r1, c0 <= j < c1 and i < j, row-major order."""
    dt = _index_dtype(unit.shape[0])
    sim = unit[r0:r1] @ unit[c0:c1].T
    same = codes[r0:r1, None] == codes[None, c0:c1]
    rows: np.ndarray = np.broadcast_to(np.arange(r0, r1, dtype=dt)[:, None], sim.shape)
    cols: np.ndarray = np.broadcast_to(np.arange(c0, c1, dtype=dt)[None, :], sim.shape)
    if r0 == c0:  # a diagonal tile: keep the strict upper triangle
        keep = np.triu(np.ones(sim.shape, dtype=bool), k=1)
        return PairBlock(sim[keep], same[keep], rows[keep], cols[keep])
    return PairBlock(sim.ravel(), same.ravel(), rows.ravel(), cols.ravel())


def _concat_blocks(parts: list[PairBlock]) -> PairBlock:
    return PairBlock(*(np.concatenate([getattr(p, f) for p in parts]) for f in PairBlock._fields))


def _exhaustive_blocks(unit: np.ndarray, codes: np.ndarray, block: int) -> Iterator[PairBlock]:
    for r0, r1, c0, c1 in _triangle_tiles(0, unit.shape[0], block):
        yield _tile_pairs(unit, codes, r0, r1, c0, c1)


def _genuine_blocks(unit: np.ndarray, codes: np.ndarray, block: int) -> Iterator[PairBlock]:
    """Every same-identity pair, tile by tile within each identity, batched into blocks of ~block^2 pairs."""
    order = np.argsort(codes, kind="stable")
    grouped_unit = unit[order]
    grouped_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, grouped_codes[1:] != grouped_codes[:-1]])
    stops = np.r_[starts[1:], codes.size]
    dt = _index_dtype(unit.shape[0])
    pending: list[PairBlock] = []
    n_pending = 0
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        for r0, r1, c0, c1 in _triangle_tiles(start, stop, block):
            tile = _tile_pairs(grouped_unit, grouped_codes, r0, r1, c0, c1)
            a, b = order[tile.i].astype(dt), order[tile.j].astype(dt)
            pending.append(PairBlock(tile.sim, tile.genuine, np.minimum(a, b), np.maximum(a, b)))
            n_pending += tile.sim.size
            if n_pending >= block * block:
                yield _concat_blocks(pending)
                pending, n_pending = [], 0
    if pending:
        yield _concat_blocks(pending)


def _sample_impostor_keys(
    codes: np.ndarray, n_wanted: int, population: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_wanted`` distinct cross-identity pairs, uniform without replacement, as sorted keys i * N + j.

    Rejection sampling: draw ordered index pairs, keep cross-identity ones, de-duplicate, repeat for the
    shortfall (each round sized by the expected acceptance and duplicate rates).
    """
    n = codes.size
    p_cross = 2.0 * population / float(n) ** 2
    keys = np.zeros(0, dtype=np.int64)
    while keys.size < n_wanted:
        p_new = max(1.0 - keys.size / population, 0.01)
        draw = min(int(1.1 * (n_wanted - keys.size) / (p_cross * p_new)) + 1024, 50_000_000)
        i = rng.integers(0, n, size=draw, dtype=np.int64)
        j = rng.integers(0, n, size=draw, dtype=np.int64)
        cross = codes[i] != codes[j]
        lo, hi = np.minimum(i[cross], j[cross]), np.maximum(i[cross], j[cross])
        keys = np.unique(np.concatenate([keys, lo * n + hi]))
    if keys.size > n_wanted:  # a uniform subset of a uniform set of distinct pairs
        keys = np.sort(rng.choice(keys, size=n_wanted, replace=False))
    return keys


def _sampled_impostor_blocks(
    unit: np.ndarray, codes: np.ndarray, n_wanted: int, population: int, block: int, seed: int
) -> Iterator[PairBlock]:
    n = codes.size
    dt = _index_dtype(n)
    keys = _sample_impostor_keys(codes, n_wanted, population, np.random.default_rng(seed))
    chunk = 16384  # rows gathered at once for the row-wise dot products: 2 x chunk x D float64
    for k0 in range(0, keys.size, block * block):
        part = keys[k0 : k0 + block * block]
        i, j = part // n, part % n
        sim = np.empty(part.size, dtype=np.float64)
        for s in range(0, part.size, chunk):
            sim[s : s + chunk] = np.einsum("ij,ij->i", unit[i[s : s + chunk]], unit[j[s : s + chunk]])
        yield PairBlock(sim, np.zeros(part.size, dtype=bool), i.astype(dt), j.astype(dt))


def all_pairs_similarity(
    embeddings: np.ndarray,
    identities: Sequence | np.ndarray,
    block: int = 4096,
    *,
    impostors: str = "auto",
    n_impostors: int = DEFAULT_SAMPLED_IMPOSTORS,
    seed: int = 0,
) -> Iterator[PairBlock]:
    """Yield ``PairBlock(sim, genuine, i, j)`` blocks covering the pairs of a labelled embedding set.

    ``sim`` is the cosine similarity (float64) of the L2-normalised rows, ``genuine`` is ``identities[i] ==
    identities[j]``, and ``i < j`` are int32 row indices (int64 beyond 2^31 rows). With all impostors (see
    ``plan_pairs``) the blocks are the tiles of a ``block`` x ``block`` tiling of the upper triangle, row-major
    within a tile, and together hold every i < j pair exactly once. With sampled impostors, every genuine pair
    comes first (grouped by identity), then ``n_impostors`` distinct cross-identity pairs drawn uniformly
    (seeded by ``seed``) in ascending (i, j) order. Peak memory is a few arrays of ``block`` x ``block``.
    """
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    unit = l2_normalise(embeddings)
    codes = identity_codes(identities)
    if codes.size != unit.shape[0]:
        raise ValueError(f"{unit.shape[0]} embeddings but {codes.size} identities")
    plan = plan_pairs(codes, impostors, n_impostors)
    if not plan.impostors_sampled:
        yield from _exhaustive_blocks(unit, codes, block)
        return
    yield from _genuine_blocks(unit, codes, block)
    if plan.n_impostor:
        yield from _sampled_impostor_blocks(
            unit, codes, plan.n_impostor, plan.n_impostor_population, block, seed
        )
