"""A job's inputs, listed once by Ray tasks and kept as Parquet parts inside the output.

The unit of work of a scoring run is a fixed row range of this input manifest. :func:`materialize_inputs`
lists the input in Ray tasks (workers), each task writes its rows as sorted Parquet parts in
``<output>/_froq/inputs/`` and returns only small dicts (names, row counts, digests, skip counts); the driver
then writes ``_froq/inputs/plan.json`` LAST, so its presence means "inputs complete", and a retry or resume reads
the plan instead of listing again. The driver never holds the rows; workers read them back per range
(:func:`read_range`, only the row groups a range touches).

Sources (what :func:`froq_ray.storage.listing.list_inputs` accepts, with the same rows, order, counts and
errors):

- an ``s3://`` (any remote) folder/prefix: the driver makes one non-recursive ``ls``; every common prefix is
  listed recursively in its own task, and each run of top-level files between two prefixes (in sorted order)
  is one more unit, all of them written by one task. Units are ordered by their key (a prefix sorts as
  ``name/``), so the concatenation of the parts is exactly the path-sorted listing;
- anything else (a local folder, a glob, a .csv/.parquet manifest): one task runs the whole of
  :func:`~froq_ray.storage.listing.list_all_inputs` (symlinks, strict CSV, duplicates, conflicting identities)
  and writes the sorted parts. Local inputs are node-local, so that task runs on the driver's node.

Parts: ``part-<unit:05d>-<k:05d>.parquet``, at most ``part_rows`` rows each, columns ``path`` (string, not
null) and ``identity`` (string, nullable), row groups of :data:`ROW_GROUP_ROWS` rows. ``input.limit`` is applied
in the plan (``total_rows``), not in the parts. Parts are written by the task that listed them (atomically on
local disks); when the output is local, every task runs on the driver's node.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import InputConfig
from ..errors import UserError
from ..storage.fs import (
    is_local_fs,
    open_fs,
    read_json,
    to_uri,
    write_bytes_atomic,
    write_json_atomic,
)
from ..storage.listing import (
    ListingCounts,
    apply_limit,
    folder_identities,
    list_all_inputs,
    list_remote_files,
    merge_skipped,
    no_images_error,
    rows_digest,
    source_kind,
    split_by_extension,
)
from ..storage.shards import STATE_DIR

log = logging.getLogger("froq_ray")

INPUTS_DIR = f"{STATE_DIR}/inputs"
"""The input parts' folder, relative to the output location."""
PLAN_FILE = f"{INPUTS_DIR}/plan.json"
"""Written last, after every part: its presence means "inputs complete"."""
PLAN_VERSION = 1
ROW_GROUP_ROWS = 10_000
"""Rows per Parquet row group of a part: the granularity at which :func:`read_range` reads."""
SCHEMA = pa.schema([pa.field("path", pa.string(), nullable=False), pa.field("identity", pa.string())])
"""Columns of every input part and of :func:`read_range`'s tables."""


@dataclass(frozen=True)
class InputPart:
    """One Parquet part in :data:`INPUTS_DIR`: its file name, its row count and :func:`table_digest` of its
    rows (sha256 hex over ``f"{path}\\t{identity or ''}\\n"`` per row, UTF-8 with surrogate escapes).

    ``name``: ``str`` file name inside :data:`INPUTS_DIR` (no folder); ``rows``: ``int`` >= 0; ``digest``:
    64 hex characters. Frozen value object; reading the part (:func:`read_range`) raises, not this class."""

    name: str
    rows: int
    digest: str


@dataclass(frozen=True)
class InputRange:
    """Rows ``[start, stop)`` of part ``part``; they are the global rows ``[row0, row0 + stop - start)``.

    ``part``: the :class:`InputPart` file name; ``start``/``stop``: ``int`` row offsets inside that part
    (``0 <= start <= stop <= part.rows``); ``row0``: ``int`` global index of its first row. One range is one
    output shard (:meth:`InputsPlan.ranges`). Frozen; :func:`read_range` raises ``ValueError`` when the
    part holds fewer rows than ``stop``."""

    part: str
    start: int
    stop: int
    row0: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class InputsPlan:
    """The listing's parts in order, its size after ``input.limit`` and its counts.

    - ``parts``: every part, in global row order (their rows concatenated = the path-sorted listing, before
      the limit);
    - ``total_rows``: rows after ``input.limit`` (the first ``total_rows`` rows of the parts);
    - ``digest``: sha256 hex over each part digest + ``"\\n"`` in order, then ``f"{total_rows}\\n"``;
    - ``summary``: the keys of :meth:`froq_ray.storage.listing.ListingCounts.summary` plus ``parts`` (count);
    - ``uri``: the listed ``input.uri``."""

    parts: list[InputPart]
    total_rows: int
    digest: str
    summary: dict[str, Any]
    uri: str = ""
    part_rows: int = 0
    reused: bool = field(default=False, compare=False)

    def ranges(self, shard_size: int) -> list[InputRange]:
        """Each part cut into consecutive ranges of at most ``shard_size`` rows (a range never spans two
        parts), global ``row0`` cumulative, stopping at ``total_rows`` (the limit shortens the last range).
        Deterministic. Raises ValueError when ``shard_size < 1``."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        out: list[InputRange] = []
        row0 = 0
        for part in self.parts:
            for start in range(0, part.rows, shard_size):
                if row0 >= self.total_rows:
                    return out
                stop = min(start + shard_size, part.rows, start + self.total_rows - row0)
                out.append(InputRange(part.name, start, stop, row0))
                row0 += stop - start
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "uri": self.uri,
            "part_rows": self.part_rows,
            "total_rows": self.total_rows,
            "digest": self.digest,
            "parts": [{"name": p.name, "rows": p.rows, "digest": p.digest} for p in self.parts],
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputsPlan:
        """The plan :meth:`to_json` wrote; raises ValueError for another plan version."""
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"input plan version {data.get('version')!r}, expected {PLAN_VERSION}")
        parts = [InputPart(p["name"], int(p["rows"]), p["digest"]) for p in data["parts"]]
        return cls(
            parts,
            int(data["total_rows"]),
            data["digest"],
            data["summary"],
            data.get("uri", ""),
            int(data.get("part_rows", 0)),
        )


def plan_digest(parts: list[InputPart], total_rows: int) -> str:
    """:attr:`InputsPlan.digest` of ``parts`` limited to ``total_rows``."""
    h = hashlib.sha256()
    for part in parts:
        h.update(f"{part.digest}\n".encode())
    h.update(f"{total_rows}\n".encode())
    return h.hexdigest()


def table_digest(table: pa.Table) -> str:
    """sha256 hex of a (path, identity) table's rows in order, as
    :func:`froq_ray.storage.listing.input_digest` hashes a listing (the digest of a part or of a range)."""
    return rows_digest(table.column("path").to_pylist(), table.column("identity").to_pylist())


# ------------------------------------------------------------------------------------------------ driver


def materialize_inputs(
    cfg: InputConfig, fs, out_path: str, *, reuse: bool, part_rows: int = 100_000, dry_run: bool = False
) -> InputsPlan:
    """List ``cfg`` into Parquet parts under ``out_path/_froq/inputs`` with Ray tasks; returns the plan.

    Runs on the driver with Ray already started (:func:`froq_ray.engine.runtime.ensure_ray`). ``fs`` is the
    output's filesystem and ``out_path`` the output folder inside it. ``reuse=True`` and an existing
    :data:`PLAN_FILE`: the stored plan is returned without listing anything. Otherwise :data:`INPUTS_DIR` is
    removed, the input listed by tasks (see the module doc), and the plan written last. Skips, followed links,
    duplicates and the limit are logged as :func:`~froq_ray.storage.listing.list_inputs` logs them.

    ``dry_run`` (``froq plan``): the stored plan is returned as above; otherwise the same tasks list the input
    and return the same part names, row counts and digests, but write nothing and delete nothing (the plan
    is returned, not stored; ``fs`` and ``out_path`` are then only read).

    Raises :class:`~froq_ray.storage.listing.InputListingError` (the original class, also when raised inside
    a task) for a missing or empty input or a malformed manifest, with the same message as ``list_inputs``;
    ValueError when ``part_rows < 1``."""
    import ray

    if part_rows < 1:
        raise ValueError(f"part_rows must be >= 1, got {part_rows}")
    inputs_dir = posixpath.join(out_path, INPUTS_DIR)
    plan_path = posixpath.join(out_path, PLAN_FILE)
    fs.invalidate_cache(inputs_dir)
    if reuse and fs.exists(plan_path):
        plan = _stored_plan(fs, out_path)
        log.info(
            "inputs: reusing the listing in %s (%d rows in %d part(s), listed from %s)",
            to_uri(fs, inputs_dir),
            plan.total_rows,
            len(plan.parts),
            plan.uri,
        )
        return plan
    if dry_run:
        fs = None  # the tasks write no part (fs=None)
    else:
        if fs.exists(inputs_dir):
            fs.rm(inputs_dir, recursive=True)
        fs.invalidate_cache(inputs_dir)

    in_fs, root = open_fs(cfg.uri, cfg.storage_options)
    options: dict[str, Any] = {}
    if is_local_fs(in_fs) or (fs is not None and is_local_fs(fs)):  # local folders live on this node
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        )
        # the driver's node may reserve no CPU for tasks (a head with num_cpus=0): the lister only waits on I/O
        options["num_cpus"] = 0
    if not is_local_fs(in_fs):
        in_fs.invalidate_cache()
    parallel = not is_local_fs(in_fs) and source_kind(cfg, in_fs, root) == "folder"
    if parallel:
        units, top_files = _remote_units(in_fs, root)
        listers = ray.remote(_list_prefix).options(**options)
        refs = [listers.remote(cfg, unit, prefix, fs, inputs_dir, part_rows) for unit, prefix in units]
        if top_files:
            refs.append(
                ray.remote(_list_files).options(**options).remote(cfg, top_files, fs, inputs_dir, part_rows)
            )
        del top_files
    else:
        refs = [ray.remote(_list_whole).options(**options).remote(cfg, fs, inputs_dir, part_rows)]
    results = _get_unwrapped(refs)

    parts = sorted((InputPart(**p) for r in results for p in r["parts"]), key=lambda p: p.name)
    listed = sum(p.rows for p in parts)
    if parallel:
        found = sum(r["found"] for r in results)
        if not listed:
            raise no_images_error(cfg, "folder", found)
        skipped = merge_skipped([r["skipped"] for r in results])
        counts = ListingCounts("folder", listed + sum(g["count"] for g in skipped.values()), skipped)
        counts.no_identity = sum(r["no_identity"] for r in results)
    else:
        (result,) = results
        counts = ListingCounts(**result["counts"])
    total_rows, counts.beyond_limit = apply_limit(listed, cfg.limit)
    counts.log(cfg)
    summary = {**counts.summary(), "parts": len(parts)}
    plan = InputsPlan(parts, total_rows, plan_digest(parts, total_rows), summary, cfg.uri, part_rows)
    if dry_run:
        log.info("inputs: counted %d row(s) of %s in %d listing task(s)", total_rows, cfg.uri, len(refs))
        return plan
    write_json_atomic(fs, plan_path, plan.to_json())
    log.info(
        "inputs: listed %d row(s) of %s into %d part(s) in %s",
        total_rows,
        cfg.uri,
        len(parts),
        to_uri(fs, inputs_dir),
    )
    return plan


def _remote_units(fs, root: str) -> tuple[list[tuple[int, str]], list[tuple[int, list[str]]]]:
    """From one non-recursive ``ls`` of ``root``: ([(unit, prefix path)], [(unit, [top-level file paths])]),
    units numbered in sorted key order (a prefix's key is ``name/``; a run of top-level files between two
    prefixes is one unit), so the units' sorted rows concatenate to the sorted listing."""
    base = root.rstrip("/")
    entries = []
    for entry in fs.ls(base, detail=True):
        name = entry["name"].rstrip("/")
        if name == base:
            continue
        is_dir = entry.get("type") == "directory"
        entries.append((name + "/" if is_dir else name, is_dir, name))
    entries.sort()
    prefixes: list[tuple[int, str]] = []
    runs: list[tuple[int, list[str]]] = []
    unit = -1
    previous_was_file = False
    for _, is_dir, name in entries:
        if is_dir:
            unit += 1
            prefixes.append((unit, name))
        else:
            if not previous_was_file:
                unit += 1
                runs.append((unit, []))
            runs[-1][1].append(name)
        previous_was_file = not is_dir
    return prefixes, runs


def _get_unwrapped(refs: list) -> list[dict[str, Any]]:
    """``ray.get(refs)``, re-raising a task's :class:`UserError` as itself (Ray wraps it in RayTaskError)."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):
            raise cause.with_traceback(None) from None
        raise


# ------------------------------------------------------------------------------------------------ tasks


def _list_prefix(
    cfg: InputConfig, unit: int, prefix: str, fs, inputs_dir: str, part_rows: int
) -> dict[str, Any]:
    """Task: list one remote prefix recursively and write its parts."""
    in_fs, _ = open_fs(cfg.uri, cfg.storage_options)
    paths, skipped, found = list_remote_files(in_fs, prefix, cfg.extensions)
    identities = _identities(cfg, paths)
    parts = _write_parts(unit, paths, identities, fs, inputs_dir, part_rows)
    return {"parts": parts, "skipped": skipped, "found": found, "no_identity": _no_identity(cfg, identities)}


def _list_files(
    cfg: InputConfig, runs: list[tuple[int, list[str]]], fs, inputs_dir: str, part_rows: int
) -> dict[str, Any]:
    """Task: the top-level files of a remote folder (runs between prefixes), filtered and written per run."""
    in_fs, _ = open_fs(cfg.uri, cfg.storage_options)
    parts: list[dict[str, Any]] = []
    skipped = []
    found = no_identity = 0
    for unit, names in runs:
        found += len(names)
        paths, run_skipped = split_by_extension([to_uri(in_fs, n) for n in names], cfg.extensions)
        skipped.append(run_skipped)
        identities = _identities(cfg, paths)
        no_identity += _no_identity(cfg, identities)
        parts += _write_parts(unit, paths, identities, fs, inputs_dir, part_rows)
    return {"parts": parts, "skipped": merge_skipped(skipped), "found": found, "no_identity": no_identity}


def _list_whole(cfg: InputConfig, fs, inputs_dir: str, part_rows: int) -> dict[str, Any]:
    """Task: the whole of ``list_all_inputs`` (local folder, glob, manifest), written as unit 0's parts."""
    listing = list_all_inputs(cfg)
    table = listing.table
    parts = _write_parts(0, table["path"].tolist(), table["identity"].tolist(), fs, inputs_dir, part_rows)
    counts = {
        k: getattr(listing, k)
        for k in (
            "source",
            "files_seen",
            "skipped",
            "followed_links",
            "duplicates",
            "no_identity",
            "missing_like_identities",
        )
    }
    return {"parts": parts, "counts": counts}


def _identities(cfg: InputConfig, paths: list[str]) -> list[str | None]:
    """Identities of listed paths of a remote folder input: with ``identity_from_folder`` those of
    :func:`~froq_ray.storage.listing.folder_identities` (the listing's one rule: None for a file directly in
    the input folder), else None."""
    return folder_identities(cfg, paths, "folder") if cfg.identity_from_folder else [None] * len(paths)


def _no_identity(cfg: InputConfig, identities: list[str | None]) -> int:
    """Rows left without an identity by ``identity_from_folder`` (0 without it: no identity was asked for)."""
    return sum(i is None for i in identities) if cfg.identity_from_folder else 0


def _write_parts(
    unit: int, paths: list[str], identities: list[str | None], fs, inputs_dir: str, part_rows: int
) -> list[dict[str, Any]]:
    """Write the sorted rows (``paths``, ``identities``: str or None) as parts of at most ``part_rows`` rows
    named ``part-<unit>-<k>.parquet``; returns [{name, rows, digest}]. ``fs=None``: nothing is written (a
    dry run), the same list is returned."""
    out = []
    for k, start in enumerate(range(0, len(paths), part_rows)):
        table = pa.table(
            {"path": paths[start : start + part_rows], "identity": identities[start : start + part_rows]},
            schema=SCHEMA,
        )
        name = f"part-{unit:05d}-{k:05d}.parquet"
        if fs is not None:
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS)
            write_bytes_atomic(fs, posixpath.join(inputs_dir, name), sink.getvalue().to_pybytes())
        out.append({"name": name, "rows": table.num_rows, "digest": table_digest(table)})
    return out


def plan_exists(fs, out_path: str) -> bool:
    """True when the output holds a finished input listing (:data:`PLAN_FILE`), so a resume reuses it."""
    path = posixpath.join(out_path, PLAN_FILE)
    fs.invalidate_cache(posixpath.dirname(path))
    return fs.exists(path)


def _stored_plan(fs, out_path: str) -> InputsPlan:
    """The finished listing of an earlier run of this output (:data:`PLAN_FILE`), marked as reused."""
    plan = InputsPlan.from_json(read_json(fs, posixpath.join(out_path, PLAN_FILE)))
    plan.reused = True
    return plan


def inputs_from_table(
    table: pd.DataFrame, fs, out_path: str, *, reuse: bool, part_rows: int = 100_000
) -> InputsPlan:
    """Write inputs a job derived on the driver (a ``path``/``identity`` DataFrame, e.g. the distill job's
    self-training copies) as the run's input parts and return their plan; ``reuse=True`` with an existing
    :data:`PLAN_FILE` returns the stored plan. The rows keep the table's order."""
    inputs_dir = posixpath.join(out_path, INPUTS_DIR)
    plan_path = posixpath.join(out_path, PLAN_FILE)
    if reuse and plan_exists(fs, out_path):
        return _stored_plan(fs, out_path)
    if fs.exists(inputs_dir):
        fs.rm(inputs_dir, recursive=True)
    paths = [str(p) for p in table["path"]]
    identities = [None if pd.isna(v) else str(v) for v in table["identity"]]
    parts = [InputPart(**p) for p in _write_parts(0, paths, identities, fs, inputs_dir, part_rows)]
    total = sum(p.rows for p in parts)
    summary = {**ListingCounts("table", total, {}).summary(), "parts": len(parts)}
    plan = InputsPlan(parts, total, plan_digest(parts, total), summary, "(derived by the job)", part_rows)
    write_json_atomic(fs, plan_path, plan.to_json())
    return plan


# ------------------------------------------------------------------------------------------------ readers


def read_range(fs, out_path: str, r: InputRange) -> pa.Table:
    """The (path, identity) rows of range ``r``, in order, as a table with :data:`SCHEMA`; reads only the
    row groups of the part that the range touches. Raises FileNotFoundError when the part is missing and
    ValueError when the part holds fewer rows than the range names."""
    path = posixpath.join(out_path, INPUTS_DIR, r.part)
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        meta = parquet.metadata
        if r.stop > meta.num_rows or r.start < 0 or r.start > r.stop:
            raise ValueError(
                f"input part {r.part} has {meta.num_rows} rows; range [{r.start}, {r.stop}) is outside"
            )
        offsets = [0]
        for i in range(meta.num_row_groups):
            offsets.append(offsets[-1] + meta.row_group(i).num_rows)
        first = bisect.bisect_right(offsets, r.start) - 1
        last = max(first, bisect.bisect_left(offsets, r.stop) - 1)
        groups = list(range(first, min(last, meta.num_row_groups - 1) + 1)) if r.stop > r.start else []
        if not groups:
            return SCHEMA.empty_table()
        table = parquet.read_row_groups(groups, columns=["path", "identity"])
    return table.slice(r.start - offsets[first], r.rows).cast(SCHEMA)
