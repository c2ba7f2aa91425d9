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
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from .. import status as st
from ..config import FilterJob
from ..curation import presets
from ..curation.centres import CentreAccumulator, CentreSums, CentreTable, l2_normalise
from ..curation.classifiability import CentreIndex
from ..curation.neighbours import DuplicateFinder, EvalOverlap, merge_suggestions
from ..curation.policies import PolicySettings, apply_policies
from ..curation.report import histograms_png, identity_stats, summary
from ..errors import UserError
from ..models.inference import resolve_device, torch_dtype
from ..storage.annotations import KEEP_LIST, AnnotationFile, embedding_matrix, identities, iter_batches
from ..storage.annotations import annotation_files as read_annotation_files
from ..storage.fs import join_uri, read_json, write_bytes_atomic, write_json_atomic
from ..storage.manifest import LEGACY_MANIFEST_FILE, status_counts, utc_now
from ..storage.output import OutputLayout
from ..storage.run_state import RunState
from ..storage.schema import EMBEDDING, frame_to_table
from .inputs import concat_rows
from .outputs import already_finished, open_files_job_output, write_job_manifest

log = logging.getLogger("froq_ray")

IDENTITY_STATS = "identity_stats.parquet"
SUMMARY = "summary.json"
HISTOGRAMS = "histograms.png"
DUPLICATES = "duplicates.parquet"
IDENTITY_MERGES = "identity_merges.parquet"
EVAL_OVERLAP = "eval_overlap.parquet"
OUTPUT_FILES = (
    KEEP_LIST,
    IDENTITY_STATS,
    SUMMARY,
    HISTOGRAMS,
    DUPLICATES,
    IDENTITY_MERGES,
    EVAL_OVERLAP,
    LEGACY_MANIFEST_FILE,
)
"""What this job writes besides ``_froq/`` (the last: where versions before ``_froq/`` wrote the manifest;
replaced runs delete it)."""
OUTPUT = OutputLayout("filter", files=OUTPUT_FILES, resumable=False, dataset_inputs=True)
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
    table = concat_rows(frames, FilterInputError)
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


# ------------------------------------------------------------------------------ duplicates, merges, overlap
def _models(files: list[AnnotationFile]) -> set[str]:
    """The model names in the files' ``model_id`` columns (files without the column add nothing)."""
    names: set[str] = set()
    for file in files:
        with file.fs.open(file.path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            if "model_id" not in parquet.schema_arrow.names:
                continue
            values = pc.unique(parquet.read(columns=["model_id"]).column("model_id")).to_pylist()
        names |= {presets.model_name(v) for v in values if v is not None}  # type: ignore[misc]
    return names


def resolve_thresholds(job: FilterJob, files: list[AnnotationFile]) -> dict[str, Any]:
    """Every threshold as a number or None (``preset`` resolved, :mod:`froq_ray.curation.presets`), the
    annotations' ``model`` (None when unknown) and the ``preset``'s name. Raises :class:`FilterInputError`
    naming ``filter.model_preset`` for an unknown model name or annotations of more than one model."""
    cfg = job.filter
    model: str | None = cfg.model_preset
    if model == "auto":
        found = _models(files)
        if len(found) > 1:
            raise FilterInputError(
                f"filter.model_preset=auto: the annotations hold embeddings of {len(found)} models "
                f"({', '.join(sorted(found))}); their similarities cannot be compared"
            )
        model = found.pop() if found else None
    elif model not in presets.MODEL_PRESETS:
        raise FilterInputError(
            f"filter.model_preset: no preset for {model!r} (presets: auto, {', '.join(presets.MODEL_PRESETS)})"
        )
    name, preset = presets.preset_for(model)
    noise = cfg.policies.label_noise
    return {
        "model": model,
        "preset": name,
        "ccs_floor": presets.resolve(noise.ccs_floor, preset, "ccs_floor"),
        "margin": presets.resolve(noise.margin, preset, "margin"),
        "duplicate": presets.resolve(cfg.duplicates.threshold, preset, "duplicate"),
        "merge": presets.resolve(cfg.identity_merges.threshold, preset, "merge"),
        "eval_overlap": presets.resolve(cfg.eval_overlap.threshold, preset, "eval_overlap"),
    }


def policy_settings(job: FilterJob, thresholds: dict[str, Any]) -> PolicySettings:
    """``filter.policies`` with the label-noise thresholds resolved, plus ``filter.eval_overlap.drop``."""
    values = job.filter.policies.model_dump()
    values["label_noise"] |= {"ccs_floor": thresholds["ccs_floor"], "margin": thresholds["margin"]}
    values["drop_eval_overlap"] = job.filter.eval_overlap.drop
    return PolicySettings.from_mapping(values)


def eval_embeddings(job: FilterJob, dim: int, model: str | None) -> tuple[np.ndarray, list[str]]:
    """Unit embeddings (M, D) float32 and paths of the ok rows of ``filter.eval_overlap.embeddings``. Raises
    :class:`FilterInputError` naming that key: missing, no usable row, another dimension or model."""
    cfg = job.filter.eval_overlap
    key = "filter.eval_overlap.embeddings"
    files = read_annotation_files(cfg.embeddings, cfg.storage_options, error=FilterInputError)
    others = _models(files) - {model}
    if others and model is not None:
        raise FilterInputError(
            f"{key}: embeddings of {', '.join(sorted(others))}, the annotations of {model}"
        )
    matrices, names = [], []
    hint = f"{key}: annotate the evaluation images with scoring.write_embedding=true"
    for batch in iter_batches(
        files,
        ["path", "status", EMBEDDING],
        job.filter.classifiability.chunk_rows,
        hint=hint,
        error=FilterInputError,
    ):
        matrix, present = embedding_matrix(batch.column(EMBEDDING))
        ok = present & (batch.column("status").to_numpy(zero_copy_only=False) == st.OK)
        matrices.append(matrix[ok])
        names += [p for p, keep in zip(batch.column("path").to_pylist(), ok, strict=True) if keep]
    if not names:
        raise FilterInputError(f"{key}: no ok rows with an embedding in {', '.join(cfg.embeddings)}")
    unit = l2_normalise(np.concatenate(matrices))
    if unit.shape[1] != dim:
        raise FilterInputError(f"{key}: embeddings of dimension {unit.shape[1]}, the annotations {dim}")
    return unit, names


def neighbour_reports(
    job: FilterJob,
    files: list[AnnotationFile],
    table: pd.DataFrame,
    centres: CentreTable,
    *,
    thresholds: dict[str, Any],
) -> dict[str, pd.DataFrame]:
    """The enabled reports, by output file name: near-duplicate image pairs (:data:`DUPLICATES`), identity
    merge suggestions (:data:`IDENTITY_MERGES`), identities overlapping the evaluation set
    (:data:`EVAL_OVERLAP`, only those that overlap). One more streamed pass over the embeddings of the usable
    rows when duplicates or eval overlap are on (:mod:`froq_ray.curation.neighbours`)."""
    cfg = job.filter
    reports: dict[str, pd.DataFrame] = {}
    finder = (
        DuplicateFinder(centres.dim, thresholds["duplicate"], cfg.duplicates.max_pairs)
        if cfg.duplicates.enabled
        else None
    )
    overlap = None
    if cfg.eval_overlap.embeddings:
        unit, names = eval_embeddings(job, centres.dim, thresholds["model"])
        overlap = EvalOverlap(centres, unit, names, thresholds["eval_overlap"])
    if finder is not None:
        images = int((table["status"].to_numpy(dtype=object) == st.OK).sum())
        log.info(
            "filter: near-duplicate search over up to %d images: exact all pairs, ~%.1e flops on %s "
            "(filter.duplicates.enabled=false skips it; docs/curation.md has the measured rates)",
            images,
            float(images) ** 2 * centres.dim,
            finder.index.device,
        )
    if finder is not None or overlap is not None:
        offset = 0
        for batch in _batches(files, _columns(job), cfg.classifiability.chunk_rows):
            frame = table.iloc[offset : offset + batch.num_rows]
            matrix, present = embedding_matrix(batch.column(EMBEDDING))
            usable = _usable(frame, present)
            rows = offset + np.flatnonzero(usable)
            unit = l2_normalise(matrix[usable])
            if finder is not None:
                try:
                    finder.add(unit, rows)
                except ValueError as exc:
                    raise FilterInputError(f"filter.duplicates.max_pairs: {exc}") from None
            if overlap is not None:
                overlap.add_images(unit, centres.index_of(frame["identity"].to_numpy(object)[usable]), rows)
            offset += batch.num_rows
    paths = table["path"].to_numpy(object)
    labels = table["identity"].to_numpy(object)
    if finder is not None:
        pairs = finder.pairs()
        a, b = pairs["row_a"].to_numpy(), pairs["row_b"].to_numpy()
        reports[DUPLICATES] = pd.DataFrame(
            {
                "path_a": paths[a],
                "path_b": paths[b],
                "identity_a": labels[a],
                "identity_b": labels[b],
                "same_identity": labels[a] == labels[b],
                "cosine": pairs["cosine"].astype(np.float64),
            }
        )
    if cfg.identity_merges.enabled:
        reports[IDENTITY_MERGES] = merge_suggestions(centres, thresholds["merge"])
    if overlap is not None:
        found = overlap.result()
        found = found[found["overlap"]].reset_index(drop=True)
        rows = found.pop("image_row").to_numpy()
        found.insert(int(found.columns.get_loc("image_nearest_eval")), "image_path", paths[rows])  # type: ignore[arg-type]
        reports[EVAL_OVERLAP] = found.drop(columns="overlap")
    return reports


def _duplicate_counts(dups: pd.DataFrame) -> dict[str, Any]:
    return {
        "pairs": len(dups),
        "within_identity": int(dups["same_identity"].sum()),
        "across_identities": int((~dups["same_identity"]).sum()),
        "images": int(pd.concat([dups["path_a"], dups["path_b"]]).nunique()),
    }


def _overlap_counts(overlap: pd.DataFrame) -> dict[str, Any]:
    return {
        "identities": len(overlap),
        "images": int(overlap["images"].sum()),
        "by": {str(k): int(v) for k, v in sorted(overlap["overlap_by"].value_counts().items())},
    }


REPORT_COUNTS: tuple[tuple[str, str, str, Callable[[pd.DataFrame], dict[str, Any]]], ...] = (
    ("near_duplicates", DUPLICATES, "duplicate", _duplicate_counts),
    ("identity_merges", IDENTITY_MERGES, "merge", lambda merges: {"pairs": len(merges)}),
    ("eval_overlap", EVAL_OVERLAP, "eval_overlap", _overlap_counts),
)
"""Each report's summary entry: (summary key, report file, key in ``thresholds``, its counts)."""


def report_counts(reports: dict[str, pd.DataFrame], thresholds: dict[str, Any]) -> dict[str, Any]:
    """The summary's (and manifest's) counts of each report (:data:`REPORT_COUNTS`): ``enabled``, the
    ``threshold`` used and the report's counts; ``enabled: false`` alone for those not run."""
    out: dict[str, Any] = {}
    for key, name, threshold, counts in REPORT_COUNTS:
        frame = reports.get(name)
        out[key] = (
            {"enabled": False}
            if frame is None
            else {"enabled": True, "threshold": thresholds[threshold], **counts(frame)}
        )
    return out


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


def open_filter_output(job: FilterJob, files: list[AnnotationFile], *, dry_run: bool = False) -> RunState:
    """Check ``output.uri`` against ``output.mode`` (:func:`~froq_ray.storage.output.open_output` with
    :data:`OUTPUT`; the annotation ``files`` are the input, digested by name, size and modification time).
    ``dry_run``: check only (:mod:`froq_ray.pipeline.outputs`). Raises
    :class:`~froq_ray.storage.run_state.OutputStateError`."""
    return open_files_job_output(job, OUTPUT, files, dry_run=dry_run)


def run_filter(job: FilterJob) -> dict[str, Any]:
    """Classifiability + policies -> keep-list, per-identity stats, summary JSON, histograms (module doc)."""
    started_at = utc_now()
    cfg, out = job.filter, job.output
    files = annotation_files(cfg.annotations, cfg.storage_options)
    # opened for real only before writing: a refused input leaves the output as it was (pipeline/outputs.py)
    state = open_filter_output(job, files, dry_run=True)
    if already_finished(job, state):
        return read_json(state.fs, f"{state.path}/{SUMMARY}")
    thresholds = resolve_thresholds(job, files)
    settings = policy_settings(job, thresholds)
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
    start = time.perf_counter()
    reports = neighbour_reports(job, files, scored, index.table, thresholds=thresholds)
    timings["neighbours_s"] = time.perf_counter() - start
    if EVAL_OVERLAP in reports:
        scored["eval_overlap"] = scored["identity"].isin(set(reports[EVAL_OVERLAP]["identity"])).to_numpy()
    decisions = apply_policies(scored, settings)
    stats = identity_stats(decisions)
    result = {
        **summary(decisions, stats),
        "inputs": [f.uri for f in files],
        "quality_column": cfg.quality_column,
        "policies": cfg.policies.model_dump(mode="json"),
        "thresholds": thresholds,
        **report_counts(reports, thresholds),
        "classifiability": {
            "device": str(index.device),
            "dtype": str(index.centres.dtype).removeprefix("torch."),
            "identities_with_centre": identities,
            "embedding_dim": dim,
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {
            name: join_uri(out.uri, name)
            for name in (KEEP_LIST, IDENTITY_STATS, SUMMARY, HISTOGRAMS, *reports)
        },
    }
    state = open_filter_output(job, files)
    fs, path = state.fs, state.path
    for name, frame in reports.items():
        write_bytes_atomic(fs, f"{path}/{name}", _parquet_bytes(frame))
    write_bytes_atomic(fs, f"{path}/{KEEP_LIST}", _parquet_bytes(_keep_list(decisions)))
    write_bytes_atomic(fs, f"{path}/{IDENTITY_STATS}", _parquet_bytes(stats))
    write_bytes_atomic(
        fs, f"{path}/{HISTOGRAMS}", histograms_png(decisions, stats, cfg.quality_column, cfg.histogram_bins)
    )
    write_json_atomic(fs, f"{path}/{SUMMARY}", result)
    write_job_manifest(
        job,
        state,
        started_at=started_at,
        counts_by_status=status_counts(decisions["status"]),
        stage_seconds={k.removesuffix("_s"): v for k, v in timings.items()},
        results={"summary": result},
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
