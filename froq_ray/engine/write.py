"""The write stage: scored rows -> one Parquet part per shard, then its completion marker, on a worker.

A shard travels as one Ray block from the read task to this task (every stage maps whole blocks), so the task
that scored a shard also commits it: it writes ``part-NNNNN.parquet`` (deterministic name from the shard
index), then ``_froq/part-NNNNN.done.json``. A retried or re-executed task rewrites the same two names with
the same content, so a retry can never add a duplicate file. The task returns one small record per shard
(counts, timings, a quality sample) for the driver's progress lines; the driver never sees a row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..storage.fs import open_fs
from ..storage.listing import input_digest
from ..storage.schema import to_table
from ..storage.shards import Shard, write_shard
from .stages import GRAPH_COLUMN, arrow_to_columns

TIMING_COLUMNS = ("_t_read", "_t_decode", "_t_score")
"""Per-row shares of each block's stage seconds, carried with the rows and summed per shard here."""
QUALITY_SAMPLE = 33
"""Quality order statistics (0th..100th percentile) each shard reports for the run summary."""


class ShardAssemblyError(RuntimeError):
    """A shard reached the write stage in pieces or with rows missing (an engine bug, never data loss).

    Raised by :func:`write_shards` before that shard is written; the message names the shard, its rows and
    the first rows found. A ``RuntimeError``, not a user error: the run fails and a re-run redoes the shard."""


@dataclass(frozen=True)
class WriteStageConfig:
    """Where and how a write task commits shards. ``schema_ipc``: the output schema (with its key-value
    metadata) serialised, since a ``pa.Schema`` is what the parts must match exactly.

    ``out_uri``/``storage_options``: the output location; ``constants``: string columns with one value per run
    (model id, calibration id, ...), filled into every row; ``num_cpus``: Ray CPUs per write task. Frozen and
    picklable. :func:`write_shards` raises :class:`ShardAssemblyError` for an incomplete shard (before that
    shard is written), what :func:`~froq_ray.storage.schema.to_table` raises for columns that do not fit the
    schema, and the filesystem's errors."""

    out_uri: str
    storage_options: dict[str, Any]
    schema_ipc: bytes
    constants: dict[str, str | None] = field(default_factory=dict)
    inputs_digest: str = ""
    """The digest of the run's input listing (:class:`~froq_ray.engine.inputs.InputsPlan`), recorded in every
    marker: a shard counts as done only for the listing it was made from."""
    num_cpus: float = 0.5

    @classmethod
    def create(
        cls, out_uri, storage_options, schema: pa.Schema, constants, *, inputs_digest: str, num_cpus=0.5
    ):
        return cls(
            out_uri,
            dict(storage_options),
            schema.serialize().to_pybytes(),
            dict(constants),
            inputs_digest,
            num_cpus,
        )

    @property
    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(self.schema_ipc))


def write_shards(table: pa.Table, cfg: WriteStageConfig) -> pa.Table:
    """Commit every shard in ``table`` (columns ``row``, ``shard``, ``shard_start``, ``shard_stop``, the
    schema's columns, the timing columns); returns one row per shard: ``shard``, ``start``, ``stop``,
    ``rows``, ``counts`` (JSON), ``seconds_read/decode/score/write``, ``quality_sample`` (JSON list),
    ``graphs`` (JSON list: the observed graphs that scored the shard's rows, empty for modes without one).

    Raises :class:`ShardAssemblyError` when a shard's rows are not exactly ``start..stop-1``."""
    columns = arrow_to_columns(table)
    schema = cfg.schema
    fs, path = open_fs(cfg.out_uri, cfg.storage_options)
    shard_ids = np.asarray(columns["shard"], dtype=np.int64)
    records = []
    for sid in np.unique(shard_ids):
        take = np.flatnonzero(shard_ids == sid)
        part = {k: np.asarray(v)[take] for k, v in columns.items()}
        order = np.argsort(part["row"], kind="stable")
        part = {k: v[order] for k, v in part.items()}
        start, stop = int(part["shard_start"][0]), int(part["shard_stop"][0])
        if not np.array_equal(part["row"], np.arange(start, stop)):
            raise ShardAssemblyError(
                f"shard {int(sid)} (rows {start}..{stop - 1}) reached the write stage with rows "
                f"{part['row'][:5].tolist()}... ({len(take)} of {stop - start}): it must travel as one block"
            )
        started = time.perf_counter()
        shard = Shard(int(sid), start, stop)
        digest = input_digest(pd.DataFrame({"path": part["path"], "identity": part["identity"]}))
        marker = write_shard(
            fs,
            path,
            shard,
            shard_table(part, schema, cfg.constants),
            shard_input_digest=digest,
            extra={"inputs_digest": cfg.inputs_digest},
        )
        seconds = {name: float(np.sum(part[name])) if name in part else 0.0 for name in TIMING_COLUMNS}
        records.append(
            {
                "shard": shard.index,
                "start": start,
                "stop": stop,
                "rows": stop - start,
                "counts": json.dumps(marker["counts"], sort_keys=True),
                "seconds_read": seconds["_t_read"],
                "seconds_decode": seconds["_t_decode"],
                "seconds_score": seconds["_t_score"],
                "seconds_write": time.perf_counter() - started,
                "quality_sample": json.dumps(_quality_sample(part.get("quality"))),
                "graphs": json.dumps(sorted({str(g) for g in part.get(GRAPH_COLUMN, ()) if g is not None})),
            }
        )
    return pa.Table.from_pylist(records)


def shard_table(part: dict[str, np.ndarray], schema: pa.Schema, constants: dict[str, str | None]) -> pa.Table:
    """Scored rows (:func:`~froq_ray.engine.stages.arrow_to_columns` of a scoring stage's output) as a table of
    the output ``schema``: the schema's columns, ``constants`` (``model_id``, ``calibration_id``) on every row,
    nulls for result columns no row produced; other columns are left out. Also the Python API's result table."""
    n = len(part["row"])
    cols: dict[str, Any] = {f.name: part[f.name] for f in schema if f.name in part}
    for name, value in constants.items():
        cols[name] = [value] * n
    for f in schema:  # result columns a shard never produced (e.g. every row failed to decode)
        if f.name not in cols:
            cols[f.name] = [None] * n
    return to_table(cols, schema, schema.metadata)


def _quality_sample(quality: np.ndarray | None) -> list[float]:
    """Evenly spaced order statistics of the shard's finite qualities (empty when none)."""
    if quality is None:
        return []
    values = np.asarray(quality, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    return [float(v) for v in np.quantile(values, np.linspace(0.0, 1.0, QUALITY_SAMPLE))]
