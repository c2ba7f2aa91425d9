"""Quality scores from another tool: read a CSV or Parquet of ``path`` + score columns, join them to the
annotations by path, so that each external column is evaluated beside ``quality`` over the same pairs.

Join rule: a score row belongs to the annotation row whose ``path`` is the same string, exactly as written
(no case folding, no stripping, no URI or ``./`` normalisation). Annotation rows without a score in every file
and score rows that match no annotation row are not errors: they are counted and named (:class:`ScoreJoin`),
and the evaluation runs on the rows that have every score.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..storage.fs import open_fs


class ScoreFileError(UserError, ValueError):
    """An external score file cannot be used; the message names the file, the column and the row."""


@dataclass
class ExternalScores:
    """One score file: its ``path`` strings (object array, unique) and its score columns (float64, finite)."""

    uri: str
    paths: np.ndarray
    columns: dict[str, np.ndarray]


@dataclass
class ScoreJoin:
    """The annotation rows kept (boolean mask over the rows given), every external column on those rows
    (float64), and what did not match: ``missing[uri]`` the annotation paths without a score in that file,
    ``unmatched[uri]`` the score paths matching no annotation row, ``not_ok[uri]`` those matching an annotation
    row whose status is not ok (all in file order)."""

    keep: np.ndarray
    scores: dict[str, np.ndarray]
    source: dict[str, str]
    missing: dict[str, list[str]] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    not_ok: dict[str, list[str]] = field(default_factory=dict)

    def skipped_rows(self) -> pd.DataFrame:
        """One row per skip: ``file``, ``reason`` (``no_score``: an annotation path without a score in that
        file; ``no_annotation``: a score path matching no annotation row; ``annotation_not_ok``: one matching
        a row whose status is not ok) and ``path``."""
        rows = [(uri, "no_score", p) for uri, paths in self.missing.items() for p in paths]
        rows += [(uri, "annotation_not_ok", p) for uri, paths in self.not_ok.items() for p in paths]
        rows += [(uri, "no_annotation", p) for uri, paths in self.unmatched.items() for p in paths]
        return pd.DataFrame(rows, columns=["file", "reason", "path"])


def _read_table(uri: str, storage_options: Mapping[str, Any] | None) -> pa.Table:
    fs, path = open_fs(uri, storage_options)
    if not fs.exists(path):
        raise ScoreFileError(f"evaluate.scores: {uri} does not exist")
    ext = posixpath.splitext(path)[1].lower()
    try:
        with fs.open(path, "rb") as fh:
            if ext == ".parquet":
                return pq.read_table(fh)
            if ext == ".csv":  # every cell as the text written, nothing read as null; numbers parsed below
                df = pd.read_csv(fh, dtype=str, keep_default_na=False, na_filter=False)
                return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ScoreFileError(f"evaluate.scores: {uri} is not a readable {ext[1:]} file: {exc}") from None
    raise ScoreFileError(f"evaluate.scores: {uri} is neither .csv nor .parquet")


def _row(df_paths: Sequence | np.ndarray, index: int) -> str:
    return f"row {index + 1} (path {df_paths[index]!r})"


def read_scores(uri: str, storage_options: Mapping[str, Any] | None = None) -> ExternalScores:
    """Read one score file (``.csv`` or ``.parquet``, through fsspec) into :class:`ExternalScores`.

    The file needs a ``path`` column (text) and at least one other column; every other column is a score.
    CSV cells are read as text and parsed as numbers; rows are counted from 1 after the header. Raises
    :class:`ScoreFileError` (one line naming the file, and the column and row where one is at fault) for: a
    missing file, an unknown extension, no ``path`` column, no score column, an empty or null path, a
    duplicate path, a score that is empty, not a number, NaN or infinite, or a non-numeric Parquet column.
    """
    table = _read_table(uri, storage_options)
    table = (
        pa.table(  # dictionary-encoded (categorical) columns as their plain values
            {
                f.name: table.column(f.name).cast(f.type.value_type)
                if pa.types.is_dictionary(f.type)
                else table.column(f.name)
                for f in table.schema
            }
        )
        if len(set(table.schema.names)) == len(table.schema.names)
        else table
    )
    names = table.schema.names
    if "path" not in names:
        raise ScoreFileError(f"evaluate.scores: {uri} has no 'path' column (columns: {', '.join(names)})")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ScoreFileError(f"evaluate.scores: {uri} has column {dup!r} twice")
    score_names = [n for n in names if n != "path"]
    if not score_names:
        raise ScoreFileError(f"evaluate.scores: {uri} has no score column besides 'path'")
    path_col = table.column("path")
    if not (pa.types.is_string(path_col.type) or pa.types.is_large_string(path_col.type)):
        raise ScoreFileError(f"evaluate.scores: {uri} column 'path' is {path_col.type}, not text")
    paths = np.array(path_col.to_pylist(), dtype=object)
    for k, p in enumerate(paths):
        if p is None or p == "":
            raise ScoreFileError(f"evaluate.scores: {uri} column 'path' row {k + 1} is empty")
    seen: dict[str, int] = {}
    for k, p in enumerate(paths):
        if p in seen:
            raise ScoreFileError(
                f"evaluate.scores: {uri} column 'path' row {k + 1} repeats path {p!r} of row {seen[p] + 1}"
            )
        seen[p] = k
    columns = {}
    for name in score_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            text = pd.Series(col.to_pylist(), dtype=object)
            values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            values = col.to_numpy(zero_copy_only=False).astype(np.float64)
            if col.null_count:
                values[np.asarray(col.is_null().to_pylist(), dtype=bool)] = np.nan
        else:
            raise ScoreFileError(f"evaluate.scores: {uri} column {name!r} is {col.type}, not a number")
        bad = ~np.isfinite(values)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            cell = col[k].as_py()
            shown = "null" if cell is None else repr(cell)
            raise ScoreFileError(
                f"evaluate.scores: {uri} column {name!r} {_row(paths, k)} is {shown}, not a finite number "
                f"({int(bad.sum())} such rows)"
            )
        columns[name] = values
    return ExternalScores(uri, paths, columns)


def join_scores(
    paths: Sequence[str] | np.ndarray,
    files: Sequence[ExternalScores],
    taken: Sequence[str] = (),
    not_ok_paths: Sequence[str] | np.ndarray = (),
) -> ScoreJoin:
    """Join score files to annotation rows (``paths``, one per ok row, unique) by exact path equality;
    ``not_ok_paths`` are the annotation rows that are not ok (a score for one of them is named as such).

    Returns a :class:`ScoreJoin`: ``keep`` marks the rows that have a score in every file, and each score
    column holds the values of the kept rows, in row order. Raises :class:`ScoreFileError` when a score column
    has the name of an annotation quality column (``taken``) or of a column of another score file, or when no
    annotation row has every score.
    """
    paths = np.asarray(paths, dtype=object)
    keep = np.ones(paths.size, dtype=bool)
    source: dict[str, str] = {}
    missing, unmatched, not_ok, positions = {}, {}, {}, {}
    index = pd.Index(paths)
    if files and not index.is_unique:
        dup = paths[index.duplicated()][0]
        rows = np.flatnonzero(paths == dup)[:2] + 1
        raise ScoreFileError(
            f"evaluate.scores: the annotations hold path {dup!r} twice (ok rows {rows[0]} and {rows[1]}), so "
            "scores cannot be joined to them by path"
        )
    other = set(not_ok_paths)
    for f in files:
        for name in f.columns:
            if name in taken:
                raise ScoreFileError(
                    f"evaluate.scores: {f.uri} column {name!r} has the name of an evaluated quality column; "
                    "rename it in the file"
                )
            if name in source:
                raise ScoreFileError(
                    f"evaluate.scores: column {name!r} is in both {source[name]} and {f.uri}; rename one"
                )
            source[name] = f.uri
        row_of = index.get_indexer(pd.Index(f.paths))  # -1: no annotation row with that path
        outside = [str(p) for p in f.paths[row_of < 0]]
        unmatched[f.uri] = [p for p in outside if p not in other]
        not_ok[f.uri] = [p for p in outside if p in other]
        has = np.zeros(paths.size, dtype=bool)
        has[row_of[row_of >= 0]] = True
        missing[f.uri] = [str(p) for p in paths[~has]]
        keep &= has
        at = np.full(paths.size, -1, dtype=np.int64)
        at[row_of[row_of >= 0]] = np.flatnonzero(row_of >= 0)
        positions[f.uri] = at
    if files and not keep.any():
        raise ScoreFileError(
            f"evaluate.scores: no annotation row has a score in every file ({', '.join(f.uri for f in files)}); "
            "paths are matched exactly as written"
        )
    scores = {name: values[positions[f.uri][keep]] for f in files for name, values in f.columns.items()}
    return ScoreJoin(keep, scores, source, missing, unmatched, not_ok)
