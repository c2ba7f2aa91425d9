"""Deterministic output shards: the run's input parts are cut into row ranges (``engine.inputs``), shard ``i`` is
written as ``part-{i:05d}.parquet`` and then its completion marker ``_froq/part-{i:05d}.done.json`` (rows, counts by
status, the shard's input digest). A shard counts as done only when its marker exists; the marker is written
last.

Layout of an output folder: the parts at the top level, every bookkeeping file (markers, ``run.json``,
``manifest.json``, a calibration artifact) in the ``_froq/`` subfolder, and transient ``.<name>.tmp-<hex>``
files while a local write is in flight. So ``pandas.read_parquet(out)``, ``pyarrow.parquet.read_table(out)``
/ ``pyarrow.dataset.dataset(out)`` (they skip ``_``/``.`` names, folders included), and the globs
``duckdb.sql("select * from read_parquet('out/*.parquet')")`` and ``polars.read_parquet("out/*.parquet")``
read exactly the parts. (``polars.read_parquet(out)`` on the bare folder refuses any folder that holds a
non-Parquet file at any depth, so polars takes the glob.) Outputs of older versions kept their markers
beside the parts as ``_part-{i:05d}.done.json`` (:data:`LEGACY_MARKER_RE`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .fs import read_json, write_bytes_atomic, write_json_atomic
from .schema import SCHEMA_VERSION

STATE_DIR = "_froq"
"""The bookkeeping subfolder of an output folder (see the module doc)."""
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
MARKER_RE = re.compile(r"^part-(\d{5,})\.done\.json$")
"""A completion marker's name inside :data:`STATE_DIR`."""
LEGACY_MARKER_RE = re.compile(r"^_part-(\d{5,})\.done\.json$")
"""A completion marker beside the parts, as versions before the ``_froq/`` layout wrote it."""


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of the sorted input listing."""

    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def part_name(self) -> str:
        return part_name(self.index)

    @property
    def marker_name(self) -> str:
        return marker_name(self.index)

    @property
    def marker_path(self) -> str:
        """The marker relative to the output folder (``_froq/part-NNNNN.done.json``)."""
        return f"{STATE_DIR}/{self.marker_name}"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def marker_name(index: int) -> str:
    """The marker's name inside :data:`STATE_DIR`."""
    return f"part-{index:05d}.done.json"


def status_counts(table: pa.Table) -> dict[str, int]:
    """Rows per ``status`` value, sorted by status."""
    counts = pc.value_counts(table.column("status")).to_pylist()
    return dict(sorted((c["values"], int(c["counts"])) for c in counts))


def write_shard(
    fs: fsspec.AbstractFileSystem,
    out_dir: str,
    shard: Shard,
    table: pa.Table,
    *,
    shard_input_digest: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the shard's Parquet (atomically on local disks), then its marker (with the part's size in
    ``bytes``, so a resume redoes a part truncated after its marker was written); returns the marker.

    ``out_dir`` is a path inside ``fs`` (see :func:`froq_ray.storage.fs.open_fs`). The table must hold
    exactly the shard's rows: every input yields one row.
    """
    if table.num_rows != shard.rows:
        raise ValueError(f"shard {shard.index} has {table.num_rows} rows, expected {shard.rows}")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    write_bytes_atomic(fs, f"{out_dir}/{shard.part_name}", data)
    marker = {
        "shard": shard.index,
        "start": shard.start,
        "stop": shard.stop,
        "rows": table.num_rows,
        "counts": status_counts(table),
        "input_digest": shard_input_digest,
        "schema_version": SCHEMA_VERSION,
        "file": shard.part_name,
        "bytes": len(data),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    write_json_atomic(fs, f"{out_dir}/{shard.marker_path}", marker)
    return marker


def read_markers(fs: fsspec.AbstractFileSystem, out_dir: str) -> dict[int, dict[str, Any]]:
    """Completion markers found in ``out_dir/_froq``, by shard index (fresh listing, no cached view)."""
    state_dir = f"{out_dir}/{STATE_DIR}"
    fs.invalidate_cache(out_dir)
    fs.invalidate_cache(state_dir)
    markers = {}
    for name in list_names(fs, state_dir):
        match = MARKER_RE.match(name)
        if match:
            markers[int(match.group(1))] = read_json(fs, f"{state_dir}/{name}")
    return markers


def list_names(fs: fsspec.AbstractFileSystem, out_dir: str) -> list[str]:
    """Base names of the files directly in ``out_dir`` (empty when it does not exist)."""
    try:
        entries = fs.ls(out_dir, detail=True)
    except FileNotFoundError:
        return []
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") != "directory")
