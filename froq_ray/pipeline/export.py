"""The export job: the images a keep-list keeps -> identity folders, Parquet shards or WebDataset tar shards.

Reads the keep-list of ``froq filter`` (``export.keep_list``: its output folder or the ``keep_list.parquet``
file; columns ``path``, ``keep``, optional ``identity``, ``quality``, ``status``) with the one annotation reader
(:mod:`froq_ray.storage.annotations`), takes the rows with ``keep`` true, sorted by
path, and writes them to ``output.uri`` in ``export.shard_size`` row shards:

- ``folder``: ``<identity>/<file name>`` (copies, or with ``export.link=true`` symbolic links for local sources and
  output); two kept files of one identity with one name get ``-<row>`` before the extension.
- ``parquet``: ``part-NNNNN.parquet`` with ``image`` (``struct<bytes: binary, path: string>``, Hugging Face's
  ``Image`` feature, named in the file's ``huggingface`` metadata, so ``datasets.load_dataset("parquet", ...)``
  decodes it), ``path`` (the source), ``identity``, ``label`` (int64: the identity's index in
  ``_froq/classes.json``, the sorted identities of the kept rows whose status is ok; -1 without an identity)
  and ``quality`` (float32, null where the keep-list has none).
- ``webdataset``: ``shard-NNNNN.tar`` (Python's ``tarfile``) with, per image, ``<key>.<ext>`` (the bytes as
  stored, ``ext`` the source's lower-case extension), ``<key>.cls`` (the label) and ``<key>.json`` (``path``,
  ``identity``, ``label``, ``quality``); ``key`` is the row's 9-digit index among the kept rows.

The driver plans; workers read and write. The driver reads the keep-list, names every target, checks the
task resources (``resources.export_num_cpus`` against the node the tasks must run on: a refusal comes before
the output is opened, so it leaves nothing there), opens the output and plans the shards; each shard still to
write is one Ray task (:func:`froq_ray.engine.tasks.run_tasks`, ``resources.export_num_cpus`` CPUs each, on the
driver's node when the output or a source is local) that gets only its own rows, reads their sources and
writes the shard's files and then its marker (which records the ``worker``: host and process id); the driver
collects the markers and writes ``_froq/skipped.parquet`` and the manifest.

Sources are read through fsspec (``export.storage_options``), in batches, and never written: an output that is
a source's folder, lies inside one or holds a source is refused. A kept row whose keep-list ``status`` is not
``ok`` (``not_an_image``, ``corrupt``... as annotate wrote it; null counts as not ok) is not read and skipped
with reason ``status_<status>`` (``status_null`` for a null) and adds no class; a keep-list without a ``status``
column is exported unchecked, with a warning in the log and ``results.status_checked: false`` in the manifest
(a file that is not an image is then exported as it is); a source that cannot be read (missing,
unreadable) is skipped with reason ``missing`` or ``read_error``. Every skip is counted by reason and named in the
log, in ``_froq/manifest.json`` (``results.skipped``, and ``counts_by_status``) and in
``_froq/skipped.parquet``; every other kept image is exported.

``output.mode`` is the one output lifecycle (:func:`froq_ray.storage.output.open_output` with :data:`OUTPUT`, a
``listed`` layout): before a shard writes anything, ``_froq/files-NNNNN.json`` names the files it will write
(:func:`~froq_ray.storage.output.record_files`); its completion marker ``_froq/part-NNNNN.done.json`` (files,
counts, skips) comes last. ``resume`` skips shards with a marker and refuses a changed config or keep-list
unless ``force`` (then shards of another plan, rows, statuses or format are undone and written again); ``overwrite``
first deletes every file an earlier export listed (and only those); ``error_if_exists`` refuses an output an
export has written to. Any mode refuses an output that holds files no export wrote, so nothing of yours is
overwritten.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import re
import socket
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import status as st
from ..config import ExportJob
from ..engine.tasks import check_task_resources, run_tasks
from ..errors import UserError
from ..storage.annotations import KEEP_LIST, annotation_files, read_table
from ..storage.fs import (
    join_uri,
    local_path,
    open_fs,
    protocol_of,
    to_uri,
    write_bytes_atomic,
    write_json_atomic,
)
from ..storage.listing import input_digest
from ..storage.manifest import utc_now
from ..storage.output import OutputLayout, discard_listed_shards, record_files
from ..storage.reader import read_blobs
from ..storage.run_state import OutputStateError, RunState
from ..storage.schema import text_values
from ..storage.shards import STATE_DIR, marker_name, part_name
from .outputs import open_job_output, write_job_manifest

log = logging.getLogger("froq_ray")

SKIPPED_FILE = f"{STATE_DIR}/skipped.parquet"
CLASSES_FILE = f"{STATE_DIR}/classes.json"
OUTPUT = OutputLayout(
    "export", files=(SKIPPED_FILE, CLASSES_FILE), shards=True, listed=True, dataset_inputs=True
)
"""The export job's output layout: its file names come from the keep-list (identity folders), so each shard
lists them before writing (``listed``); besides those, the skip table and the class list in ``_froq/``."""
KEEP_LIST_HINT = f"export.keep_list takes a `froq filter` output or its {KEEP_LIST}"
NO_LABEL = -1
NUM_CPUS_KEY = "resources.export_num_cpus"
STATUS_SKIP = "status_"
"""Prefix of the skip reason of a kept row whose keep-list status is not ok (``status_not_an_image``)."""
READ_BATCH = 64
"""Source images read at a time (concurrently for object stores)."""
HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PARQUET_SCHEMA = pa.schema(
    [
        pa.field("image", HF_IMAGE),
        pa.field("path", pa.string(), nullable=False),
        pa.field("identity", pa.string()),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("quality", pa.float32()),
    ],
    metadata={
        b"huggingface": json.dumps(
            {
                "info": {
                    "features": {
                        "image": {"_type": "Image"},
                        "path": {"dtype": "string", "_type": "Value"},
                        "identity": {"dtype": "string", "_type": "Value"},
                        "label": {"dtype": "int64", "_type": "Value"},
                        "quality": {"dtype": "float32", "_type": "Value"},
                    }
                }
            }
        ).encode()
    },
)
"""The Parquet export's columns; the ``huggingface`` metadata makes ``datasets`` read ``image`` as an image."""


class ExportInputError(UserError, ValueError):
    """The keep-list cannot be exported as asked (missing, no ``path``/``keep`` column, an identity that cannot
    be a folder name...); the message names the keep-list and the row."""


@dataclass(frozen=True)
class KeepList:
    rows: pd.DataFrame
    """The kept rows sorted by path: ``path``, ``identity`` (None without one), ``quality`` (float32, NaN without
    one), ``status`` (the keep-list's text, None where null; ``ok`` for every row of a keep-list without a
    ``status`` column), ``label`` (the identity's index in ``classes``; -1 without an identity or for a row
    skipped for its status)."""
    uri: str
    total_rows: int
    """Rows of the keep-list, kept or not."""
    classes: list[str]
    """The identities of the rows to export (kept, status ok), sorted: ``label`` i is ``classes[i]``. A row
    skipped for its keep-list status adds no class; a row whose source then fails to read at export time
    (``missing``, ``read_error``) still counts, as that is only known once the shards are written."""
    status_checked: bool
    """Whether the keep-list has a ``status`` column (without one, every kept row is exported unchecked)."""


@dataclass(frozen=True)
class ShardPlan:
    index: int
    start: int
    stop: int


@dataclass(frozen=True)
class ExportSettings:
    """What every shard task needs besides its rows (picklable): the output folder (``out_uri``: the resolved
    folder's URI, an absolute path for local output, with ``out_storage_options``; ``mode``: ``output.mode``),
    ``format``, ``link`` and the sources' ``storage_options``."""

    out_uri: str
    out_storage_options: dict[str, Any]
    mode: str
    format: str
    link: bool
    storage_options: dict[str, Any]


@dataclass(frozen=True)
class ShardTask:
    """One shard's work, run as one Ray task: ``rows`` (the shard's slice of :attr:`KeepList.rows`, rows
    ``shard.start`` .. ``shard.stop - 1``) and ``targets`` (their entries of the targets, same order)."""

    settings: ExportSettings
    shard: ShardPlan
    rows: pd.DataFrame
    targets: list[str]

    def __str__(self) -> str:
        return f"export shard {self.shard.index} (kept rows {self.shard.start}..{self.shard.stop - 1})"


def read_keep_list(uri: str, storage_options: dict[str, Any]) -> KeepList:
    """The kept rows of the keep-list at ``uri`` (a filter output folder, a Parquet file, or a glob of them,
    read in order) through :mod:`froq_ray.storage.annotations`. Raises :class:`ExportInputError` for a
    missing keep-list, a missing ``path``/``keep`` column, a ``keep`` column that is not boolean or has nulls,
    a null or repeated kept path (naming the file and the first bad row)."""
    try:
        files = annotation_files([uri], storage_options, keep_lists=True, error=ExportInputError)
    except ExportInputError as exc:
        raise ExportInputError(f"keep-list: {exc} ({KEEP_LIST_HINT})") from None
    tables = []
    for f in files:
        table = read_table(
            f,
            ("path", "keep"),
            ("identity", "quality", "status"),
            hint=KEEP_LIST_HINT,
            error=ExportInputError,
        )
        _check_keep_column(f.uri, table)
        tables.append(table)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
    uri = files[0].uri if len(files) == 1 else uri
    kept = table.filter(table.column("keep"))
    n = kept.num_rows

    def text(name: str, default: str | None) -> pd.Series:
        # object columns: a null stays None (pandas' string dtype would turn it into NaN)
        if name not in kept.column_names:
            return pd.Series([default] * n, dtype=object)
        try:
            return pd.Series(text_values(kept.column(name).to_pylist(), name), dtype=object)
        except TypeError as exc:
            raise ExportInputError(f"{uri}: kept rows: {exc}") from None

    frame = pd.DataFrame(
        {
            "path": text("path", None),
            "identity": text("identity", None),
            "quality": np.asarray(
                [np.nan if v is None else v for v in kept.column("quality").to_pylist()], dtype=np.float32
            )
            if "quality" in kept.column_names
            else np.full(n, np.nan, np.float32),
            "status": text("status", st.OK),
        }
    )
    nulls = frame.index[frame["path"].isna()]
    if len(nulls):
        raise ExportInputError(f"{uri}: kept row {int(nulls[0])} has a null path")
    repeated = frame["path"][frame["path"].duplicated()]
    if len(repeated):
        raise ExportInputError(f"{uri}: {len(repeated)} kept path(s) appear twice, e.g. {repeated.iloc[0]}")
    frame = frame.sort_values("path", kind="stable", ignore_index=True)
    exported = (frame["status"] == st.OK).to_numpy()
    classes = sorted({i for i, ok in zip(frame["identity"], exported, strict=True) if ok and i is not None})
    index = {name: k for k, name in enumerate(classes)}
    frame["label"] = np.asarray(
        [
            index[i] if ok and i is not None else NO_LABEL
            for i, ok in zip(frame["identity"], exported, strict=True)
        ],
        dtype=np.int64,
    )
    return KeepList(frame, uri, table.num_rows, classes, "status" in table.column_names)


def _check_keep_column(uri: str, table: pa.Table) -> None:
    """Refuse a ``keep`` column that is not boolean, or that has a null (naming its first row and path)."""
    keep = table.column("keep")
    if not pa.types.is_boolean(keep.type):
        raise ExportInputError(f"{uri}: keep must be a boolean column (it is {keep.type})")
    if keep.null_count:
        row = pc.indices_nonzero(keep.is_null()).to_pylist()[0]
        path = table.column("path")[row].as_py()
        raise ExportInputError(
            f"{uri}: row {row} ({path if path is not None else 'null path'}) has a null keep "
            f"({keep.null_count} null(s) in all): keep must be true or false on every row"
        )


def run_export(job: ExportJob, force: bool = False) -> dict[str, Any]:
    """Export the kept images (module doc); returns the run manifest
    (:class:`~froq_ray.storage.manifest.RunManifest` as written: the common header and ``results``). ``force``:
    resume even though the config or keep-list changed. Raises
    :class:`ExportInputError` and :class:`~froq_ray.storage.run_state.OutputStateError`."""
    cfg, out = job.export, job.output
    started_at, started = utc_now(), time.perf_counter()
    keep = read_keep_list(cfg.keep_list, cfg.storage_options)
    kept, keep_uri, keep_rows, classes = keep.rows, keep.uri, keep.total_rows, keep.classes
    targets = _targets(kept, cfg.format)
    _check_sources_apart(kept["path"], out.uri, out.storage_options)
    if cfg.link:
        _check_linkable(kept["path"], out.uri)
    local = protocol_of(out.uri) == "file" or any(protocol_of(p) == "file" for p in kept["path"])
    if len(kept):  # before the output is opened, so that a refusal leaves nothing in it
        check_task_resources(
            job.resources, job.resources.export_num_cpus, on_driver_node=local, num_cpus_key=NUM_CPUS_KEY
        )
    if not keep.status_checked:
        log.warning(
            "export: the keep-list %s has no status column: its %d kept row(s) were not checked to be "
            "readable images (a file that is not one is exported as it is)",
            keep_uri,
            len(kept),
        )
    listing = kept[["path", "identity"]]
    state = open_job_output(
        job,
        OUTPUT,
        extra={"keep_list_rows": keep_rows},
        force=force,
        input_digest=input_digest(listing),
        inputs=[keep_uri],
        listing=listing,
    )
    fs, root = state.fs, state.path
    shards = [
        ShardPlan(i, start, min(start + cfg.shard_size, len(kept)))
        for i, start in enumerate(range(0, len(kept), cfg.shard_size))
    ]
    current = {s.index for s in shards if _is_current(state.markers.get(s.index), s, kept, cfg)}
    undone = discard_listed_shards(state, current)
    if undone:
        log.info("export: undid %d shard(s) of an earlier, other plan or interrupted write", undone)
    write_json_atomic(fs, f"{root}/{CLASSES_FILE}", classes)
    pending = [s for s in shards if s.index not in state.markers]
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    log.info(
        "export: %d of %d keep-list rows kept; %d shard(s), %d to write (%s) -> %s",
        len(kept),
        keep_rows,
        len(shards),
        len(pending),
        cfg.format,
        out.uri,
    )
    settings = ExportSettings(
        to_uri(fs, root),
        dict(out.storage_options),
        out.mode,
        cfg.format,
        cfg.link,
        dict(cfg.storage_options),
    )
    tasks = [
        ShardTask(settings, s, kept.iloc[s.start : s.stop].copy(), targets[s.start : s.stop]) for s in pending
    ]
    for task, marker in run_tasks(
        _export_shard,
        tasks,
        resources=job.resources,
        num_cpus=job.resources.export_num_cpus,
        on_driver_node=local,
        num_cpus_key=NUM_CPUS_KEY,
    ):
        state.markers[task.shard.index] = marker
        log.info(
            "export: shard %d/%d done (%d written, %d skipped)",
            task.shard.index + 1,
            len(shards),
            marker["written"],
            len(marker["skipped"]),
        )
    skipped = [row for s in shards for row in state.markers[s.index]["skipped"]]
    _write_skipped(fs, root, skipped)
    results = _results(job, keep, state, shards, len(pending))
    manifest = write_job_manifest(
        job,
        state,
        started_at=started_at,
        counts_by_status=_counts(results, keep_rows),
        stage_seconds={"prepare": read_seconds, "export": time.perf_counter() - started},
        results=results,
    )
    if skipped:
        log.warning(
            "export: %d kept image(s) skipped %s, e.g. %s (all listed in %s)",
            len(skipped),
            results["skipped"]["by_reason"],
            skipped[0]["path"],
            join_uri(out.uri, SKIPPED_FILE),
        )
    log.info("export: %d image(s) written to %s", results["written"], out.uri)
    return manifest


# ------------------------------------------------------------------------------------------------ targets
def _targets(kept: pd.DataFrame, fmt: str) -> list[str]:
    """Each kept row's file in the output, relative: ``<identity>/<name>`` for folder, else the shard files are
    named per shard and this is the image member's extension (``jpg``...)."""
    if fmt != "folder":
        return [_extension(p, i) for i, p in enumerate(kept["path"])]
    names = []
    for i, (path, identity) in enumerate(zip(kept["path"], kept["identity"], strict=True)):
        if identity is None:
            raise ExportInputError(
                f"kept row {path} has no identity: format=folder needs one folder per identity "
                "(export it as parquet or webdataset, where identity is null and label -1)"
            )
        if "/" in identity or "\\" in identity or identity in (".", "..", STATE_DIR) or not identity.strip():
            raise ExportInputError(f"identity {identity!r} (row {path}) cannot be a folder name")
        names.append((identity, posixpath.basename(local_path(path)), i))
    counts = Counter((identity, name) for identity, name, _ in names)
    out = []
    for identity, name, i in names:
        if counts[(identity, name)] > 1:
            stem, ext = posixpath.splitext(name)
            name = f"{stem}-{i}{ext}"
        out.append(f"{identity}/{name}")
    return out


def _extension(path: str, row: int) -> str:
    ext = posixpath.splitext(posixpath.basename(local_path(path)))[1].lower().lstrip(".")
    if not ext or not re.fullmatch(r"[a-z0-9]+", ext):
        raise ExportInputError(f"kept row {row} ({path}): no file extension to name its image member by")
    return ext


def _shard_file(fmt: str, index: int) -> str:
    return part_name(index) if fmt == "parquet" else f"shard-{index:05d}.tar"


def _is_current(marker: dict[str, Any] | None, shard: ShardPlan, kept: pd.DataFrame, cfg) -> bool:
    """Whether an earlier run's marker is this shard of this plan: same rows (bounds and their digest), format
    and link setting, and the same rows skipped for their keep-list status (a status edited since, or a marker
    of an export that did not skip by status, is not current)."""
    if marker is None:
        return False
    rows = kept.iloc[shard.start : shard.stop]
    status_skips = {
        s["path"]: s["reason"] for s in marker.get("skipped", ()) if s["reason"].startswith(STATUS_SKIP)
    }
    statuses = zip(rows["path"], rows["status"], strict=True)
    return (
        (marker.get("start"), marker.get("stop")) == (shard.start, shard.stop)
        and (marker.get("format"), marker.get("link")) == (cfg.format, cfg.link)
        and marker.get("rows_digest") == input_digest(rows)
        and status_skips == {p: _status_reason(v) for p, v in statuses if v != st.OK}
    )


def _status_reason(status: str | None) -> str:
    """The skip reason of a kept row whose keep-list status is not ok: ``status_<status>``, ``status_null``."""
    return STATUS_SKIP + ("null" if status is None else status)


# ------------------------------------------------------------------------------------------------ checks
def _check_sources_apart(paths: pd.Series, out_uri: str, storage_options: dict[str, Any]) -> None:
    """Refuse an output that is (or lies inside) a source image's folder, or that holds a source image."""
    _, out_path = open_fs(out_uri, storage_options)
    protocol = protocol_of(out_uri)
    out_path = _real(out_path, protocol).rstrip("/")
    folders = set()
    for path in paths:
        if protocol_of(path) != protocol:
            continue
        source = _real(local_path(path) if protocol == "file" else path.split("://", 1)[-1], protocol)
        if source.startswith(out_path + "/"):
            raise OutputStateError(f"output {out_uri} holds source image {path}: export to another folder")
        folders.add(posixpath.dirname(source))
    ancestor = out_path
    while ancestor not in ("", "/"):
        if ancestor in folders:
            raise OutputStateError(
                f"output {out_uri} is inside the source folder {ancestor}: export outside the source images"
            )
        ancestor = posixpath.dirname(ancestor)


def _real(path: str, protocol: str) -> str:
    return os.path.realpath(path) if protocol == "file" else path


def _check_linkable(paths: pd.Series, out_uri: str) -> None:
    remote = [p for p in [out_uri, *paths] if protocol_of(p) != "file"]
    if remote:
        raise ExportInputError(
            f"export.link=true needs local sources and a local output ({remote[0]} is not): copy instead"
        )


# ------------------------------------------------------------------------------------------------ writing
def _export_shard(task: ShardTask) -> dict[str, Any]:
    """Write one shard (a Ray task, on a worker): record its files, read the sources of its rows whose status
    is ok, write the member files (folder) or the shard file, then the marker, which it returns. A retried task
    rewrites the same names. Returns the marker: bounds, ``written``, ``skipped`` (``path``, ``reason``,
    ``error`` per skipped row, in row order), ``rows_digest``, ``files``, ``format``, ``link``, ``written_at``,
    ``worker`` (``host``, ``pid``)."""
    cfg, shard, rows = task.settings, task.shard, task.rows
    fs, root = open_fs(cfg.out_uri, cfg.out_storage_options)
    files = list(task.targets) if cfg.format == "folder" else [_shard_file(cfg.format, shard.index)]
    record_files(RunState(cfg.out_uri, fs, root, cfg.mode), shard.index, files)
    written, skipped = 0, []
    members: list[tuple[int, pd.Series, str, bytes]] = []
    paths, statuses = rows["path"].tolist(), rows["status"].tolist()
    for start in range(0, len(paths), READ_BATCH):
        batch = range(start, min(start + READ_BATCH, len(paths)))
        readable = [j for j in batch if statuses[j] == st.OK]
        blobs = dict(
            zip(readable, _read([paths[j] for j in readable], cfg.link, cfg.storage_options), strict=True)
        )
        for j in batch:
            row = rows.iloc[j]
            if j not in blobs:
                reason = _status_reason(statuses[j])
                message = f"{row['path']}: the keep-list's status is {statuses[j]!r}, not {st.OK!r}"
                skipped.append({"path": row["path"], "reason": reason, "error": message})
                continue
            blob, error = blobs[j]
            if error is not None:
                skipped.append({"path": row["path"], "reason": _reason(error), "error": error})
                continue
            if cfg.format == "folder":
                _write_member(fs, root, task.targets[j], row["path"], blob, cfg.link)
            else:
                assert blob is not None  # shards never link: every source read without error has its bytes
                members.append((shard.start + j, row, task.targets[j], blob))
            written += 1
    if cfg.format == "parquet":
        write_bytes_atomic(fs, f"{root}/{files[0]}", _parquet_shard(members))
    elif cfg.format == "webdataset":
        write_bytes_atomic(fs, f"{root}/{files[0]}", _tar_shard(members))
    marker = {
        "shard": shard.index,
        "start": shard.start,
        "stop": shard.stop,
        "rows": shard.stop - shard.start,
        "written": written,
        "skipped": skipped,
        "rows_digest": input_digest(rows),
        "files": files,
        "format": cfg.format,
        "link": cfg.link,
        "written_at": utc_now(),
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    write_json_atomic(fs, f"{root}/{STATE_DIR}/{marker_name(shard.index)}", marker)
    return marker


def _read(
    paths: list[str], link: bool, storage_options: dict[str, Any]
) -> list[tuple[bytes | None, str | None]]:
    """(bytes or None, error or None) per source; with ``link`` only whether the file exists (nothing is read)."""
    if link:
        return [(None, None) if os.path.isfile(local_path(p)) else (None, f"{p}: not found") for p in paths]
    blobs, errors = read_blobs(paths, storage_options)
    return list(zip(blobs, errors, strict=True))


def _reason(error: str) -> str:
    return "missing" if error.endswith(": not found") else "read_error"


def _write_member(fs, root: str, target: str, source: str, blob: bytes | None, link: bool) -> None:
    path = f"{root}/{target}"
    if not link:
        assert blob is not None  # a copy: every source read without error has its bytes
        write_bytes_atomic(fs, path, blob)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):  # a link this export made in an earlier, interrupted try
        os.remove(path)
    os.symlink(os.path.abspath(local_path(source)), path)


def _parquet_shard(members: list[tuple[int, pd.Series, str, bytes]]) -> bytes:
    table = pa.table(
        {
            "image": pa.array(
                [
                    {"bytes": blob, "path": posixpath.basename(local_path(row["path"]))}
                    for _, row, _, blob in members
                ],
                type=HF_IMAGE,
            ),
            "path": pa.array([row["path"] for _, row, _, _ in members], pa.string()),
            "identity": pa.array([row["identity"] for _, row, _, _ in members], pa.string()),
            "label": pa.array([int(row["label"]) for _, row, _, _ in members], pa.int64()),
            "quality": pa.array(
                np.asarray([row["quality"] for _, row, _, _ in members], dtype=np.float32), from_pandas=True
            ),
        },
        schema=PARQUET_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _tar_shard(members: list[tuple[int, pd.Series, str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, row, ext, blob in members:
            key = f"{i:09d}"
            quality = float(row["quality"])
            meta = {
                "path": row["path"],
                "identity": row["identity"],
                "label": int(row["label"]),
                "quality": quality if np.isfinite(quality) else None,
            }
            for name, data in (
                (f"{key}.{ext}", blob),
                (f"{key}.cls", str(int(row["label"])).encode()),
                (f"{key}.json", json.dumps(meta, sort_keys=True).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _write_skipped(fs, root: str, skipped: list[dict[str, str]]) -> None:
    table = pa.table(
        {
            "path": pa.array([s["path"] for s in skipped], pa.string()),
            "reason": pa.array([s["reason"] for s in skipped], pa.string()),
            "error": pa.array([s["error"] for s in skipped], pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(fs, f"{root}/{SKIPPED_FILE}", sink.getvalue().to_pybytes())


def _results(
    job: ExportJob, keep: KeepList, state: RunState, shards: list[ShardPlan], written_now: int
) -> dict[str, Any]:
    """The manifest's ``results``: keep-list, counts, skips (the first 100 paths), format, shards, files,
    identities, ``status_checked`` (false: the keep-list has no ``status`` column, no row was checked)."""
    done = [state.markers[s.index] for s in shards]
    skipped = [row for m in done for row in m["skipped"]]
    by_reason = Counter(row["reason"] for row in skipped)
    return {
        "keep_list": keep.uri,
        "keep_list_rows": keep.total_rows,
        "kept": len(keep.rows),
        "written": sum(m["written"] for m in done),
        "skipped": {
            "count": len(skipped),
            "by_reason": dict(sorted(by_reason.items())),
            "paths": [row["path"] for row in skipped[:100]],
            "all_in": SKIPPED_FILE,
        },
        "format": job.export.format,
        "link": job.export.link,
        "shards": len(shards),
        "shards_written_this_run": written_now,
        "files": sum(len(m["files"]) for m in done),
        "identities": len(keep.classes),
        "status_checked": keep.status_checked,
        "classes": CLASSES_FILE,
        "resumed": state.resumed,
        "forced": state.forced,
    }


def _counts(results: dict[str, Any], keep_rows: int) -> dict[str, int]:
    """The header's ``counts_by_status`` over the keep-list's rows: ``exported``, each skip reason, ``not_kept``
    (rows with ``keep`` false); statuses without rows are left out."""
    statuses = {"exported": results["written"], "not_kept": keep_rows - results["kept"]}
    statuses |= results["skipped"]["by_reason"]
    return dict(sorted((status, n) for status, n in statuses.items() if n))
