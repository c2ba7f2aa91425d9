"""The filter job: annotation Parquet (embeddings + identities) -> CCS/NNCCS/CR -> policies -> a keep-list.

Runs on the driver with numpy/torch, no Ray (see docs/curation.md for the sizes this is fine for and how it
distributes beyond). Two streamed passes over the annotation files, ``classifiability.chunk_rows`` rows at a
time, so the embeddings are never all in memory:

1. per chunk, partial class-centre sums (``curation.centres``), merged as they come; the light columns
   (path, identity, status, quality) are kept;
2. per chunk, CCS / NNCCS / CR against the merged centres (``curation.classifiability.CentreIndex``, on
   ``classifiability.device``).

Then the policies (``curation.policies``) decide ``keep`` and ``reason`` for every row, rows whose status is
not ok included (``keep=false``, ``reason=<status>``). Written to ``output.uri``: ``keep_list.parquet``,
``identity_stats.parquet``, ``summary.json``, ``histograms.png`` and ``_froq/manifest.json``. Input files are only
read, never moved or deleted; the output may not be an input folder.

``output.mode`` (:mod:`froq_ray.storage.output`; the job has no partial state worth resuming):
``error_if_exists`` refuses an output that holds any of these files; ``resume`` does nothing when the output
holds the finished run of the same config and annotation files, and otherwise recomputes and replaces them;
``overwrite`` deletes them first.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .. import status as st
from ..config import FilterJob, config_digest, digest_payload, resolved_dict
from ..curation.centres import CentreAccumulator, CentreSums
from ..curation.classifiability import CentreIndex
from ..curation.policies import PolicySettings, apply_policies
from ..curation.report import histograms_png, identity_stats, summary
from ..errors import UserError
from ..models.inference import resolve_device, torch_dtype
from ..storage.annotations import KEEP_LIST, AnnotationFile, embedding_matrix, identities, iter_batches
from ..storage.annotations import annotation_files as read_annotation_files
from ..storage.fs import join_uri, read_json, write_bytes_atomic, write_json_atomic
from ..storage.location import Location
from ..storage.manifest import LEGACY_MANIFEST_FILE, RunManifest, status_counts, utc_now, write_manifest
from ..storage.output import OutputLayout, files_digest, open_output
from ..storage.run_state import RunState
from ..storage.schema import EMBEDDING, frame_to_table

log = logging.getLogger("froq_ray")

IDENTITY_STATS = "identity_stats.parquet"
SUMMARY = "summary.json"
HISTOGRAMS = "histograms.png"
OUTPUT_FILES = (KEEP_LIST, IDENTITY_STATS, SUMMARY, HISTOGRAMS, LEGACY_MANIFEST_FILE)
"""What this job writes besides ``_froq/`` (the last: where versions before ``_froq/`` wrote the manifest;
replaced runs delete it)."""
OUTPUT = OutputLayout("filter", files=OUTPUT_FILES, resumable=False)
"""The filter job's output layout: no partial state worth resuming."""
CR_COLUMN = "cr"
KEEP_LIST_COLUMNS = (
    "path",
    "identity",
    "keep",
    "reason",
    "status",
    "quality",
    "ccs",
    "nnccs",
    "cr",
    "nearest_identity",
    "identity_images",
    "label_noise",
    "label_noise_rule",
    "cr_note",
)


class FilterInputError(UserError, ValueError):
    """The annotations cannot be filtered (missing, no embeddings, duplicate paths...); names the input."""


COLUMNS_HINT = "check filter.identity_column / filter.quality_column"


# ------------------------------------------------------------------------------------------------ reading
def annotation_files(uris: list[str], storage_options: dict[str, Any]) -> list[AnnotationFile]:
    """:func:`froq_ray.storage.annotations.annotation_files` of ``filter.annotations`` (folders, files, globs),
    refusing with :class:`FilterInputError`."""
    return read_annotation_files(uris, storage_options, error=FilterInputError)


def _batches(files: list[AnnotationFile], columns: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    return iter_batches(files, columns, chunk_rows, hint=COLUMNS_HINT, error=FilterInputError)


def _light_frame(batch: pa.RecordBatch, job: FilterJob) -> pd.DataFrame:
    cfg = job.filter
    frame = pd.DataFrame(
        {
            "path": batch.column("path").to_pandas(),
            "status": batch.column("status").to_pandas(),
        }
    )
    values = batch.column(cfg.identity_column).to_pylist() if cfg.identity_source == "column" else None
    frame["identity"] = identities(frame["path"].tolist(), cfg.identity_source, values)
    if cfg.quality_column != CR_COLUMN:
        frame["quality"] = batch.column(cfg.quality_column).to_pandas().astype(np.float64)
    return frame


def _columns(job: FilterJob) -> list[str]:
    cfg = job.filter
    columns = ["path", "status", EMBEDDING]
    if cfg.identity_source == "column":
        columns.append(cfg.identity_column)
    if cfg.quality_column != CR_COLUMN:
        columns.append(cfg.quality_column)
    return list(dict.fromkeys(columns))


def _usable(frame: pd.DataFrame, present: np.ndarray) -> np.ndarray:
    return (frame["status"].to_numpy(dtype=object) == st.OK) & frame["identity"].notna().to_numpy() & present


# ------------------------------------------------------------------------------------------------ passes
def centre_pass(job: FilterJob, files: list[AnnotationFile]) -> tuple[pd.DataFrame, CentreSums]:
    """Pass 1: the light row table and the merged class-centre sums of the usable rows."""
    accumulator = CentreAccumulator()
    frames = []
    for batch in _batches(files, _columns(job), job.filter.classifiability.chunk_rows):
        frame = _light_frame(batch, job)
        matrix, present = embedding_matrix(batch.column(EMBEDDING))
        usable = _usable(frame, present)
        if usable.any():
            accumulator.add(CentreSums.from_chunk(matrix[usable], frame["identity"].to_numpy(object)[usable]))
        frame["has_embedding"] = present
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    duplicated = table["path"][table["path"].duplicated()]
    if len(duplicated):
        raise FilterInputError(
            f"{len(duplicated)} path(s) appear more than once across the annotations, "
            f"e.g. {duplicated.iloc[0]}"
        )
    try:
        sums = accumulator.result()
    except ValueError:
        raise FilterInputError(
            "no ok rows with an identity and an embedding in the annotations: annotate identity folders with "
            "--set input.identity_from_folder=true, or filter them with --set filter.identity_source=folder"
        ) from None
    return table, sums


def search_setup(job: FilterJob) -> tuple[torch.device, torch.dtype]:
    """Device and similarity dtype for the nearest-centre search (fp32 on cpu whatever the precision)."""
    cfg = job.filter.classifiability
    device = torch.device(resolve_device(cfg.device, "filter.classifiability.device"))
    dtype = torch_dtype(cfg.precision) if device.type == "cuda" else torch.float32
    return device, dtype


def centre_index(job: FilterJob, sums: CentreSums) -> CentreIndex:
    """The merged centres as the scoring pass uses them (float32 directions on the search device)."""
    cfg = job.filter.classifiability
    device, dtype = search_setup(job)
    return CentreIndex(sums.table(), device, dtype, cfg.block_rows, cfg.block_centres, cfg.eps)


def score_pass(
    job: FilterJob, files: list[AnnotationFile], table: pd.DataFrame, index: CentreIndex
) -> pd.DataFrame:
    """Pass 2: ccs, nnccs, cr, nearest_identity, identity_images, cr_note of each usable row (else NaN)."""
    cfg = job.filter.classifiability
    n = len(table)
    out = {
        "ccs": np.full(n, np.nan, np.float32),
        "nnccs": np.full(n, np.nan, np.float32),
        "cr": np.full(n, np.nan, np.float32),
        "nearest_identity": np.full(n, None, object),
        "identity_images": np.zeros(n, np.int64),
        "cr_note": np.full(n, None, object),
    }
    offset = 0
    for batch in _batches(files, _columns(job), cfg.chunk_rows):
        rows = slice(offset, offset + batch.num_rows)
        frame = table.iloc[rows]
        matrix, present = embedding_matrix(batch.column(EMBEDDING))
        usable = _usable(frame, present)
        if usable.any():
            scores = index.score(matrix[usable], frame["identity"].to_numpy(object)[usable])
            where = offset + np.flatnonzero(usable)
            for name, values in (
                ("ccs", scores.ccs),
                ("nnccs", scores.nnccs),
                ("cr", scores.cr),
                ("nearest_identity", scores.nearest_identity),
                ("identity_images", scores.identity_images),
                ("cr_note", scores.note),
            ):
                out[name][where] = values
        offset += batch.num_rows
    if offset != n:
        raise FilterInputError(f"the annotations changed while filtering ({n} rows, then {offset})")
    scored = table.assign(**out)
    if job.filter.quality_column == CR_COLUMN:
        scored["quality"] = scored["cr"].astype(np.float64)
    return scored


# ------------------------------------------------------------------------------------------------ writing
def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(frame_to_table(frame), buffer)
    return buffer.getvalue()


def _keep_list(decisions: pd.DataFrame) -> pd.DataFrame:
    frame = decisions.loc[:, list(KEEP_LIST_COLUMNS)].copy()
    for name in ("quality", "ccs", "nnccs", "cr"):
        frame[name] = frame[name].astype(np.float32)
    return frame


def open_filter_output(job: FilterJob, files: list[AnnotationFile]) -> RunState:
    """Check ``output.uri`` against ``output.mode`` (:func:`~froq_ray.storage.output.open_output` with
    :data:`OUTPUT`; the annotation ``files`` are the input, digested by name, size and modification time).
    Raises :class:`~froq_ray.storage.run_state.OutputStateError`."""
    out = job.output
    return open_output(
        Location.of(out),
        out.mode,
        OUTPUT,
        config_digest=config_digest(job),
        input_digest=files_digest(files),
        inputs=[f.uri for f in files],
        config=digest_payload(job),
    )


def run_filter(job: FilterJob) -> dict[str, Any]:
    """Classifiability + policies -> keep-list, per-identity stats, summary JSON, histograms (module doc)."""
    started_at = utc_now()
    cfg, out = job.filter, job.output
    files = annotation_files(cfg.annotations, cfg.storage_options)
    state = open_filter_output(job, files)
    if state.finished:
        log.info(
            "filter: %s holds the finished run of this config and these annotations: nothing to do "
            "(output.mode=overwrite recomputes)",
            out.uri,
        )
        return read_json(state.fs, f"{state.path}/{SUMMARY}")
    settings = PolicySettings.from_mapping(cfg.policies.model_dump())
    timings: dict[str, float] = {}
    start = time.perf_counter()
    table, sums = centre_pass(job, files)
    timings["centres_s"] = time.perf_counter() - start
    log.info(
        "filter: %d rows in %d file(s), %d identities with embeddings (dim %d)",
        len(table),
        len(files),
        len(sums),
        sums.dim,
    )
    index = centre_index(job, sums)
    identities, dim = len(sums), sums.dim
    del sums  # scoring needs only the float32 centre table: the float64 sums can go
    start = time.perf_counter()
    scored = score_pass(job, files, table, index)
    timings["classifiability_s"] = time.perf_counter() - start
    decisions = apply_policies(scored, settings)
    stats = identity_stats(decisions)
    result = {
        **summary(decisions, stats),
        "inputs": [f.uri for f in files],
        "quality_column": cfg.quality_column,
        "policies": cfg.policies.model_dump(mode="json"),
        "classifiability": {
            "device": str(index.device),
            "dtype": str(index.centres.dtype).removeprefix("torch."),
            "identities_with_centre": identities,
            "embedding_dim": dim,
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {
            name: join_uri(out.uri, name) for name in (KEEP_LIST, IDENTITY_STATS, SUMMARY, HISTOGRAMS)
        },
    }
    fs, path = state.fs, state.path
    write_bytes_atomic(fs, f"{path}/{KEEP_LIST}", _parquet_bytes(_keep_list(decisions)))
    write_bytes_atomic(fs, f"{path}/{IDENTITY_STATS}", _parquet_bytes(stats))
    write_bytes_atomic(
        fs, f"{path}/{HISTOGRAMS}", histograms_png(decisions, stats, cfg.quality_column, cfg.histogram_bins)
    )
    write_json_atomic(fs, f"{path}/{SUMMARY}", result)
    write_manifest(
        Location.of(out),
        RunManifest(
            job="filter",
            started_at=started_at,
            config=resolved_dict(job),
            config_digest=state.run_info["config_digest"],
            counts_by_status=status_counts(decisions["status"]),
            stage_seconds={k.removesuffix("_s"): v for k, v in timings.items()},
            results={"summary": result},
        ),
    )
    if fs.exists(f"{path}/{LEGACY_MANIFEST_FILE}"):  # an older version's manifest would describe another run
        fs.rm_file(f"{path}/{LEGACY_MANIFEST_FILE}")
    log.info(
        "filter: kept %d of %d rows (%d identities lost); dropped by reason %s; written to %s",
        result["kept"],
        result["rows"],
        result["identities_lost"],
        result["dropped_by_reason"],
        out.uri,
    )
    return result
