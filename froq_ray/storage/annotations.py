"""The one reader of annotation outputs, beside their writers (:mod:`froq_ray.storage.shards`,
:mod:`froq_ray.storage.schema`): what calibrate, evaluate, filter and distill read.

- :func:`annotation_files`: the Parquet files of annotation URIs (folders of ``part-*.parquet``, files, globs;
  with ``keep_lists``: a filter output folder gives its ``keep_list.parquet``), each file's footer checked, so
  a job refuses a file that is not Parquet before it opens its output;
- :func:`open_parquet`: one file as a ``pyarrow.parquet.ParquetFile``; a file pyarrow cannot read as Parquet
  is the job's one-line error naming it;
- :func:`require_columns`: a one-line error naming the file, the missing columns, its columns and the job
  that writes them (:data:`WRITTEN_BY`) plus the caller's hint (the config keys to check);
- :func:`read_table` / :func:`iter_batches`: the columns needed, whole or in batches;
- :func:`list_matrix` / :func:`embedding_matrix`: a fixed-size-list column as a float32 ``(N, D)`` matrix;
- :func:`identities`: one identity per row from a column, the parent folder of ``path``, or none.

Each function takes ``error``: the job's :class:`~froq_ray.errors.UserError` subclass to raise (default
:class:`AnnotationInputError`), so a job's refusals keep their type.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..vocabulary import SPLIT_KEY_SOURCES, SplitKeySource
from .fs import open_fs, to_uri
from .listing import has_magic
from .schema import EMBEDDING, PSEUDO_LABEL_COLUMNS
from .shards import PART_RE

KEEP_LIST = "keep_list.parquet"
"""The filter job's keep-list, in its output folder (written by :mod:`froq_ray.pipeline.filter`)."""
LAYER_NORMS = "layer_norms"
"""The calibrate job's per-image column of every candidate layer's norm."""
WRITTEN_BY = {
    "path": "every annotate, calibrate and filter output",
    "status": "every annotate and calibrate output",
    EMBEDDING: "annotate with scoring.write_embedding=true",
    "quality": "annotate",
    "identity": "annotate (null without input.identity_from_folder or input.identity_column)",
    LAYER_NORMS: "calibrate",
    "model_id": "annotate and calibrate",
    "calibration_id": "annotate",
    **dict.fromkeys(PSEUDO_LABEL_COLUMNS, "annotate (pseudo_label components) and calibrate"),
    **dict.fromkeys(("ccs", "nnccs", "cr", "keep", "reason"), "filter (keep_list.parquet)"),
}
"""Which job writes each column a reader may require (named in the missing-column error)."""


class AnnotationInputError(UserError, ValueError):
    """Annotation outputs cannot be read as asked (missing, empty, a column missing); names the file or URI."""


@dataclass(frozen=True)
class AnnotationFile:
    """One annotation Parquet file: its filesystem and its path inside it."""

    fs: fsspec.AbstractFileSystem
    path: str

    @property
    def uri(self) -> str:
        return to_uri(self.fs, self.path)


FOOTER_CHECK_THREADS = 8
"""Files whose footers :func:`annotation_files` reads at once (a few requests each on object stores)."""


@contextmanager
def open_parquet(
    file: AnnotationFile, error: type[UserError] = AnnotationInputError
) -> Iterator[pq.ParquetFile]:
    """``file`` opened as a ``pyarrow.parquet.ParquetFile`` (its footer read) for the ``with`` block. Raises
    ``error``, one line naming the file, when pyarrow cannot read it as Parquet (not Parquet, empty,
    truncated: ``<uri>: not a readable Parquet file (<pyarrow's reason>)``)."""
    with file.fs.open(file.path, "rb") as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise error(f"{file.uri}: not a readable Parquet file ({reason})") from None
        yield parquet


def check_footers(files: Sequence[AnnotationFile], error: type[UserError] = AnnotationInputError) -> None:
    """Read every file's Parquet footer (:func:`open_parquet`, a few at once); raises ``error`` naming the
    first unreadable file in ``files`` order."""

    def check(file: AnnotationFile) -> None:
        with open_parquet(file, error):
            pass

    with ThreadPoolExecutor(max_workers=max(1, min(FOOTER_CHECK_THREADS, len(files)))) as pool:
        list(pool.map(check, files))  # map re-raises the first failure in order


def part_paths(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """The ``part-NNNNN.parquet`` files directly in ``folder`` (paths of ``fs``), sorted."""
    return sorted(p for p in fs.ls(folder, detail=False) if PART_RE.match(posixpath.basename(p)))


def annotation_files(
    uris: Sequence[str],
    storage_options: dict[str, Any] | None,
    *,
    keep_lists: bool = False,
    error: type[UserError] = AnnotationInputError,
) -> list[AnnotationFile]:
    """The Parquet files of each URI, in the order given: a folder gives its ``part-*.parquet`` (with
    ``keep_lists``, a folder holding ``keep_list.parquet`` and no part gives that file), a file itself, a glob
    the files it matches. An existing folder or file is read as itself even when its name holds ``*``, ``?``
    or ``[``; only a path that does not exist is taken as a glob (as for ``input.uri``). Every file's footer
    is read (:func:`check_footers`), so a job that calls this before opening its output creates nothing for
    bad inputs. Raises ``error`` naming the URI when it does not exist or holds no file, or naming the file
    when it is not readable Parquet."""
    files: list[AnnotationFile] = []
    for uri in uris:
        fs, path = open_fs(uri, storage_options)
        fs.invalidate_cache()  # parts written by worker tasks, maybe in this process's run
        if fs.isdir(path):
            found = part_paths(fs, path)
            keep_list = f"{path.rstrip('/')}/{KEEP_LIST}"
            if keep_lists and fs.exists(keep_list):
                has_parts = any(posixpath.basename(p).startswith("part-") for p in fs.ls(path, detail=False))
                found = found if has_parts else [keep_list]
        elif fs.isfile(path):
            found = [path]
        elif has_magic(uri):
            found = sorted(p for p in fs.glob(path) if fs.isfile(p))
        else:
            raise error(f"annotations not found: {uri}")
        if not found:
            raise error(f"no annotation Parquet files in {uri}")
        files += [AnnotationFile(fs, p) for p in found]
    check_footers(files, error)
    return files


def require_columns(
    file: AnnotationFile,
    schema: pa.Schema,
    columns: Sequence[str],
    *,
    hint: str = "",
    error: type[UserError] = AnnotationInputError,
) -> None:
    """Raise ``error`` when ``schema`` (of ``file``) lacks any of ``columns``: ``<uri>: no column(s) [...]
    (columns: ...); <job that writes each>; <hint>``."""
    names = schema.names
    missing = [c for c in columns if c not in names]
    if not missing:
        return
    writers = "; ".join(f"{c} is written by {WRITTEN_BY[c]}" for c in missing if c in WRITTEN_BY)
    raise error(
        f"{file.uri}: no column(s) {missing} (columns: {', '.join(names)})"
        + (f"; {writers}" if writers else "")
        + (f"; {hint}" if hint else "")
    )


def read_table(
    file: AnnotationFile,
    columns: Sequence[str],
    optional: Sequence[str] = (),
    *,
    hint: str = "",
    error: type[UserError] = AnnotationInputError,
    check: Callable[[pa.Schema], None] | None = None,
) -> pa.Table:
    """``columns`` (required, :func:`require_columns`) and those of ``optional`` the file has, in that order.
    ``check``: called with the file's schema first (a job's own checks of its config against the columns)."""
    with open_parquet(file, error) as parquet:
        schema = parquet.schema_arrow
        if check is not None:
            check(schema)
        require_columns(file, schema, columns, hint=hint, error=error)
        wanted = [*columns, *(c for c in optional if c in schema.names)]
        return parquet.read(columns=list(dict.fromkeys(wanted)))


def iter_batches(
    files: Sequence[AnnotationFile],
    columns: Sequence[str],
    batch_rows: int,
    *,
    hint: str = "",
    error: type[UserError] = AnnotationInputError,
) -> Iterator[pa.RecordBatch]:
    """``columns`` of every file in order, at most ``batch_rows`` rows per batch (each file checked with
    :func:`require_columns` before its first batch)."""
    for file in files:
        with open_parquet(file, error) as parquet:
            require_columns(file, parquet.schema_arrow, columns, hint=hint, error=error)
            yield from parquet.iter_batches(batch_size=batch_rows, columns=list(dict.fromkeys(columns)))


def _one_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def list_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A ``fixed_size_list<float>[D]`` column of N rows as a float32 ``(N, D)`` matrix (a null row reads as
    whatever its slots hold, zeros as written; see :func:`embedding_matrix` for the mask). ``TypeError`` for
    another column type."""
    column = _one_array(column)
    if not pa.types.is_fixed_size_list(column.type):
        raise TypeError(f"expected a fixed_size_list column, got {column.type}")
    dim = column.type.list_size
    flat = column.values.slice(column.offset * dim, len(column) * dim).to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(len(column), dim)


def embedding_matrix(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 ``(N, D)`` matrix, bool ``(N,)`` mask of rows that have an embedding: not null, finite and not
    all zero) of an ``embedding`` column."""
    column = _one_array(column)
    matrix = list_matrix(column)
    present = column.is_valid().to_numpy(zero_copy_only=False).astype(bool)
    present &= np.isfinite(matrix).all(axis=1) & (np.abs(matrix).sum(axis=1) > 0)
    return matrix, present


def identities(
    paths: Sequence[Any], source: SplitKeySource, values: Sequence[Any] | None = None
) -> np.ndarray:
    """One identity per row (object ``(N,)``, None where there is none): ``source="column"``: ``values`` (nulls
    and NaN as None, others as given); ``"folder"``: the parent folder's name of each ``path``; ``"none"``: all
    None. ``ValueError`` for another source or a column without ``values``."""
    if source == "folder":
        return np.array([posixpath.basename(posixpath.dirname(str(p))) for p in paths], dtype=object)
    if source == "none":
        return np.full(len(paths), None, dtype=object)
    if source != "column" or values is None:
        raise ValueError(
            f"identity source must be one of {list(SPLIT_KEY_SOURCES)} (column with values), got {source!r}"
        )
    out = np.empty(len(values), dtype=object)
    out[:] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values]
    return out
