"""Near-duplicate images, identity-merge suggestions and evaluation-set overlap, by exact cosine search.

All three are threshold searches on L2-normalised float32 embeddings (cosine = inner product), done with faiss
(``IndexFlatIP``: exact inner products, no approximation; on the GPUs faiss sees when it has any, else on the
CPU). faiss finds the candidates at ``threshold - CANDIDATE_SLACK``; every candidate's cosine is then recomputed
in float64 from the stored float32 unit vectors and kept when ``cosine >= threshold``, so the result does not
depend on BLAS rounding or on faiss's strict ``>`` of range search, and equals a float64 brute force.

- :class:`DuplicateFinder`: near-duplicate image pairs, streamed: each chunk is added to the index, then
  searched against everything added so far (itself included), keeping pairs whose other row came earlier, so
  every pair (within or across identities) is found exactly once, as ``(row_a < row_b)``. Memory: the index,
  N x D float32 (on CPU the float64 decision reads faiss's own storage; on GPU a host copy), plus the pairs.
- :func:`merge_suggestions`: identity pairs whose centre directions have cosine >= threshold, once per pair
  (``identity_a < identity_b`` by name), symmetric by construction.
- :class:`EvalOverlap`: identities whose centre, or any image, has cosine >= threshold to any embedding of an
  evaluation set (insightface's practice before training on a set that may hold benchmark people).

No Ray; numpy + faiss only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .centres import CentreTable

CANDIDATE_SLACK = 1e-4
"""faiss candidates are taken this far below the threshold, then decided in float64 (module doc)."""
BLAS_DATABASE_BLOCK = 65_536
"""faiss's ``distance_compute_blas_database_bs`` (process-wide; faiss's default 1024 makes its CPU GEMMs
~2x slower here, docs/curation.md) set when an index is made."""
GPU_MAX_K = 2048
"""faiss GPU indexes return at most this many neighbours per query (range search is k-NN with growing k)."""


def faiss_gpus() -> int:
    """How many GPUs faiss can use (0 with the faiss-cpu build)."""
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _unit32(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D (N, D), got shape {x.shape}")
    return x


class InnerProductIndex:
    """Exact inner-product index of float32 rows (faiss ``IndexFlatIP``), searched by threshold or top-1.

    ``dim``: D. ``gpu``: ``"auto"`` (faiss's GPUs when it has any), ``True`` or ``False``. ``method``:
    ``"range"`` (faiss range search; CPU only) or ``"knn"`` (k-NN with k doubled until the k-th neighbour is
    below the threshold; what GPU indexes support, at most :data:`GPU_MAX_K` neighbours per query);
    ``"auto"``: range on CPU, knn on GPU. Raises ValueError for ``gpu=True`` without a GPU or an unknown
    method."""

    def __init__(self, dim: int, gpu: bool | str = "auto", method: str = "auto") -> None:
        import faiss

        gpus = faiss_gpus()
        faiss.cvar.distance_compute_blas_database_bs = max(
            faiss.cvar.distance_compute_blas_database_bs, BLAS_DATABASE_BLOCK
        )
        if gpu is True and gpus == 0:
            raise ValueError("a GPU faiss index was asked for but faiss sees no GPU (faiss-cpu build?)")
        self.on_gpu = bool(gpus) if gpu == "auto" else bool(gpu)
        if method == "auto":
            method = "knn" if self.on_gpu else "range"
        if method not in ("range", "knn") or (method == "range" and self.on_gpu):
            raise ValueError(f"method must be range (CPU) or knn, got {method!r} on {self.device}")
        self.method = method
        self.dim = int(dim)
        index = faiss.IndexFlatIP(self.dim)
        self.index = faiss.index_cpu_to_all_gpus(index) if self.on_gpu else index
        self._vectors: list[np.ndarray] = []  # GPU only: the host copy of the rows (CPU: faiss's own storage)
        self._stacked: np.ndarray | None = None

    @property
    def device(self) -> str:
        return "gpu" if self.on_gpu else "cpu"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, x: np.ndarray) -> None:
        """Append rows (ids continue from :attr:`ntotal`)."""
        x = _unit32(x, "vectors")
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {x.shape[1]}, the index {self.dim}")
        if len(x):
            self.index.add(x)
            if self.on_gpu:
                self._vectors.append(x)
            self._stacked = None

    def vectors(self) -> np.ndarray:
        """All added rows (N, D) float32, for the float64 decision: on CPU a read-only view of the faiss
        index's own storage (no copy); on GPU a host copy kept beside the index."""
        if not self.on_gpu:
            import faiss

            if self.ntotal == 0:
                return np.zeros((0, self.dim), np.float32)

            flat = faiss.rev_swig_ptr(self.index.get_xb(), self.ntotal * self.dim)  # type: ignore[union-attr]
            view = np.asarray(flat).reshape(self.ntotal, self.dim)
            view.flags.writeable = False
            return view
        if self._stacked is None:
            self._stacked = (
                np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.dim), np.float32)
            )
            self._vectors = [self._stacked]
        return self._stacked

    def range_pairs(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row int64, index id int64, cosine float64) of every (query, stored row) with inner product
        >= ``threshold`` (decided in float64, module doc), sorted by query row then id."""
        queries = _unit32(queries, "queries")
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
        if self.ntotal == 0 or len(queries) == 0:
            return empty
        radius = float(threshold) - CANDIDATE_SLACK
        if self.method == "range":
            lims, _, ids = self.index.range_search(queries, radius)
            rows = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims).astype(np.int64))
            ids = ids.astype(np.int64)
        else:
            rows, ids = self._knn_candidates(queries, radius)
        exact = np.einsum(
            "nd,nd->n", queries[rows].astype(np.float64), self.vectors()[ids].astype(np.float64)
        )
        keep = exact >= threshold
        rows, ids, exact = rows[keep], ids[keep], exact[keep]
        order = np.lexsort((ids, rows))
        return rows[order], ids[order], exact[order]

    def _knn_candidates(self, queries: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        k = min(64, self.ntotal)
        pending = np.arange(len(queries))
        rows_out, ids_out = [], []
        while pending.size:
            values, ids = self.index.search(queries[pending], k)
            saturated = (values[:, -1] > radius) & (ids[:, -1] >= 0)
            if k < self.ntotal and saturated.any():
                if k >= GPU_MAX_K:
                    raise ValueError(
                        f"{int(saturated.sum())} query row(s) have more than {GPU_MAX_K} neighbours above the "
                        "threshold (the most a faiss GPU search returns): raise the threshold"
                    )
            else:
                saturated[:] = False
            done = ~saturated
            hit = (values[done] > radius) & (ids[done] >= 0)
            rows_out.append(np.repeat(pending[done], hit.sum(axis=1)))
            ids_out.append(ids[done][hit])
            pending = pending[saturated]
            k = min(2 * k, self.ntotal, GPU_MAX_K)
        return np.concatenate(rows_out).astype(np.int64), np.concatenate(ids_out).astype(np.int64)

    def top1(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cosine float64, id int64) of each query's best stored row (exact in float64 among faiss's top
        candidates within :data:`CANDIDATE_SLACK` of its best; ties go to the lower id); NaN / -1 when the
        index is empty."""
        queries = _unit32(queries, "queries")
        n = len(queries)
        if self.ntotal == 0 or n == 0:
            return np.full(n, np.nan), np.full(n, -1, np.int64)
        k = min(8, self.ntotal)
        values, ids = self.index.search(queries, k)
        best = np.full(n, -np.inf)
        best_id = np.full(n, -1, np.int64)
        stored = self.vectors()
        for j in range(k):  # candidates near the faiss best, re-decided in float64
            cand = ids[:, j].astype(np.int64)
            near = (cand >= 0) & (values[:, j] >= values[:, 0] - CANDIDATE_SLACK)
            exact = np.full(n, -np.inf)
            exact[near] = np.einsum(
                "nd,nd->n", queries[near].astype(np.float64), stored[cand[near]].astype(np.float64)
            )
            better = (exact > best) | ((exact == best) & (cand < best_id) & near)
            best = np.where(better, exact, best)
            best_id = np.where(better, cand, best_id)
        return best, best_id


# ------------------------------------------------------------------------------------------- duplicates
DUPLICATE_COLUMNS = ("row_a", "row_b", "cosine")


class DuplicateFinder:
    """Near-duplicate pairs (cosine >= ``threshold``) over chunks of unit embeddings, streamed (module doc).

    ``add(unit, rows)``: ``unit`` (n, D) float32 L2-normalised, ``rows`` (n,) int64 global row numbers,
    increasing across calls. Returns the chunk's new pairs. ``max_pairs``: ValueError once more pairs than
    that are found (a threshold too low for the data). ``pairs()``: all pairs as a DataFrame ``row_a``,
    ``row_b`` (int64, row_a < row_b), ``cosine`` (float64), sorted by row_a, row_b."""

    def __init__(
        self, dim: int, threshold: float, max_pairs: int | None = None, gpu: bool | str = "auto"
    ) -> None:
        self.threshold = float(threshold)
        self.max_pairs = max_pairs
        self.index = InnerProductIndex(dim, gpu=gpu)
        self._rows: list[np.ndarray] = []
        self._found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._count = 0

    def add(self, unit: np.ndarray, rows: np.ndarray) -> int:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.shape != (len(unit),):
            raise ValueError(f"{rows.size} row numbers for {len(unit)} embeddings")
        base = self.index.ntotal
        self.index.add(unit)
        self._rows.append(rows)
        q, ids, cosine = self.index.range_pairs(unit, self.threshold)
        earlier = ids < base + q  # the other row was added before this one: each pair once
        q, ids, cosine = q[earlier], ids[earlier], cosine[earlier]
        all_rows = np.concatenate(self._rows)
        self._rows = [all_rows]
        a, b = all_rows[ids], rows[q]
        self._found.append((np.minimum(a, b), np.maximum(a, b), cosine))
        self._count += len(cosine)
        if self.max_pairs is not None and self._count > self.max_pairs:
            raise ValueError(
                f"more than {self.max_pairs} near-duplicate pairs at cosine >= {self.threshold}: "
                "raise the threshold or max_pairs"
            )
        return len(cosine)

    def pairs(self) -> pd.DataFrame:
        if self._found:
            a, b, c = (np.concatenate(parts) for parts in zip(*self._found, strict=True))
        else:
            a, b, c = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
        order = np.lexsort((b, a))
        return pd.DataFrame({"row_a": a[order], "row_b": b[order], "cosine": c[order]})


def near_duplicates(
    unit: np.ndarray, threshold: float, chunk_rows: int = 65_536, **options: object
) -> pd.DataFrame:
    """:meth:`DuplicateFinder.pairs` of an in-memory (N, D) unit matrix, rows 0..N-1, added in chunks."""
    unit = _unit32(unit, "embeddings")
    finder = DuplicateFinder(unit.shape[1], threshold, **options)  # type: ignore[arg-type]
    for start in range(0, len(unit), chunk_rows):
        chunk = unit[start : start + chunk_rows]
        finder.add(chunk, np.arange(start, start + len(chunk)))
    return finder.pairs()


# ------------------------------------------------------------------------------------------- merges
MERGE_COLUMNS = ("identity_a", "identity_b", "cosine", "images_a", "images_b")


def merge_suggestions(centres: CentreTable, threshold: float, gpu: bool | str = "auto") -> pd.DataFrame:
    """Identity pairs whose centre directions have cosine >= ``threshold``: DataFrame of
    :data:`MERGE_COLUMNS` (``identity_a < identity_b``; ``cosine`` float64; ``images_*`` int64), once per
    pair, sorted by cosine descending then names. Memory: the K x D float32 index of the directions."""
    index = InnerProductIndex(centres.dim, gpu=gpu)
    index.add(centres.directions)
    q, ids, cosine = index.range_pairs(centres.directions, threshold)
    once = ids > q  # identities are sorted: the lower index is identity_a; the diagonal is dropped
    a, b, cosine = q[once], ids[once], cosine[once]
    frame = pd.DataFrame(
        {
            "identity_a": centres.identities[a].astype(object),
            "identity_b": centres.identities[b].astype(object),
            "cosine": cosine,
            "images_a": centres.counts[a].astype(np.int64),
            "images_b": centres.counts[b].astype(np.int64),
        }
    )
    return frame.sort_values(
        ["cosine", "identity_a", "identity_b"], ascending=[False, True, True]
    ).reset_index(drop=True)


# ------------------------------------------------------------------------------------------- eval overlap
EVAL_OVERLAP_COLUMNS = (
    "identity",
    "images",
    "overlap",
    "overlap_by",
    "centre_cosine",
    "centre_nearest_eval",
    "image_cosine",
    "image_row",
    "image_nearest_eval",
)


@dataclass
class EvalOverlap:
    """Identities overlapping an evaluation set: centre or any image with cosine >= ``threshold`` to any of
    ``eval_unit`` (M, D) unit float32 (``eval_names``: M labels, e.g. the evaluation images' paths).

    Feed every image chunk to :meth:`add_images` (unit (n, D), own identity row in ``centres`` (n,) int64,
    global row numbers (n,)), then :meth:`result`: one row per identity of :data:`EVAL_OVERLAP_COLUMNS`:
    ``overlap`` (bool), ``overlap_by`` (``centre``, ``image``, ``centre+image`` or None), best cosines
    (float64) and the evaluation label / training row (int64, -1 for none) they come from."""

    centres: CentreTable
    eval_unit: np.ndarray
    eval_names: Sequence[str]
    threshold: float
    gpu: bool | str = "auto"
    _index: InnerProductIndex = field(init=False)
    _image_best: np.ndarray = field(init=False)
    _image_row: np.ndarray = field(init=False)
    _image_eval: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        eval_unit = _unit32(self.eval_unit, "evaluation embeddings")
        if eval_unit.shape[1] != self.centres.dim:
            raise ValueError(
                f"evaluation embeddings have dimension {eval_unit.shape[1]}, the training set {self.centres.dim}"
            )
        if len(self.eval_names) != len(eval_unit):
            raise ValueError(f"{len(self.eval_names)} evaluation names for {len(eval_unit)} embeddings")
        self._index = InnerProductIndex(eval_unit.shape[1], gpu=self.gpu)
        self._index.add(eval_unit)
        k = len(self.centres)
        self._image_best = np.full(k, -np.inf)
        self._image_row = np.full(k, -1, np.int64)
        self._image_eval = np.full(k, -1, np.int64)

    def add_images(self, unit: np.ndarray, own: np.ndarray, rows: np.ndarray) -> None:
        own = np.asarray(own, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        best, nearest = self._index.top1(unit)
        known = own >= 0
        if not known.any():
            return
        frame = pd.DataFrame(
            {"own": own[known], "best": best[known], "row": rows[known], "eval": nearest[known]}
        )
        top = frame.sort_values(["own", "best", "row"], ascending=[True, False, True]).drop_duplicates("own")
        ids = top["own"].to_numpy()
        better = top["best"].to_numpy() > self._image_best[ids]
        ids = ids[better]
        self._image_best[ids] = top["best"].to_numpy()[better]
        self._image_row[ids] = top["row"].to_numpy()[better]
        self._image_eval[ids] = top["eval"].to_numpy()[better]

    def result(self) -> pd.DataFrame:
        centre_best, centre_eval = self._index.top1(self.centres.directions)
        names = np.asarray(self.eval_names, dtype=object)
        by_centre = centre_best >= self.threshold
        seen = self._image_row >= 0
        by_image = seen & (self._image_best >= self.threshold)
        how = np.full(len(self.centres), None, dtype=object)
        how[by_image] = "image"
        how[by_centre] = "centre"
        how[by_centre & by_image] = "centre+image"
        return pd.DataFrame(
            {
                "identity": self.centres.identities.astype(object),
                "images": self.centres.counts.astype(np.int64),
                "overlap": by_centre | by_image,
                "overlap_by": how,
                "centre_cosine": centre_best,
                "centre_nearest_eval": np.where(centre_eval >= 0, names[np.maximum(centre_eval, 0)], None),
                "image_cosine": np.where(seen, self._image_best, np.nan),
                "image_row": self._image_row,
                "image_nearest_eval": np.where(seen, names[np.maximum(self._image_eval, 0)], None),
            }
        )
