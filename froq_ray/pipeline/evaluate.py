"""The evaluate job: annotation Parquet + identity labels -> EDC/pAUC table (markdown, CSV, JSON) + EDC PNG.

Runs on the driver: it reads only the columns it needs and streams the pair similarities in blocks
(``evaluation.protocol``), so a few million pairs need no cluster. The protocol (pairs, threshold, discarding,
areas) is documented in ``docs/evaluation-protocol.md``.

Evaluation is one step, so ``output.mode`` has no partial state to continue (:mod:`froq_ray.storage.output`):
``resume`` (the default) does nothing when the output holds the finished evaluation of the same config and
annotation files, and otherwise recomputes and replaces the evaluation files; ``overwrite`` deletes the earlier
ones first; ``error_if_exists`` refuses an output that already holds any of them.
"""

from __future__ import annotations

import difflib
import json
import logging
import posixpath
import tempfile
import time
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import status as st
from ..config import EvaluateJob
from ..engine.modes import PERCENTILE_COLUMN
from ..errors import UserError
from ..evaluation.external import ScoreFileError, ScoreJoin, join_scores, read_scores
from ..evaluation.pairs import plan_pairs
from ..evaluation.plot import plot_edc
from ..evaluation.protocol import compute_edc_curves, edc_markdown_table, results_table
from ..evaluation.thresholds import threshold_tables
from ..evaluation.uncertainty import BAND, small_sample_warnings
from ..storage.annotations import (
    AnnotationFile,
    annotation_files,
    embedding_matrix,
    identities,
    read_table,
    require_columns,
)
from ..storage.fs import check_reachable, join_uri, open_fs
from ..storage.location import Location
from ..storage.manifest import read_manifest, status_counts, utc_now
from ..storage.output import OutputLayout
from ..storage.run_state import OutputStateError, RunState
from ..storage.schema import EMBEDDING
from .outputs import already_finished, open_files_job_output, write_job_manifest

log = logging.getLogger("froq_ray")

EVALUATION_FILES = ("edc.md", "edc.csv", "edc.png", "thresholds.csv", "skipped_scores.csv")
"""What an evaluation writes into ``output.uri`` besides ``_froq/`` (``edc.png`` only when ``evaluate.plot`` is
null, ``skipped_scores.csv`` only with ``evaluate.scores``)."""
EXAMPLES = 10
"""Paths named in the log and the manifest per kind of skip (all of them are in ``skipped_scores.csv``)."""
OUTPUT = OutputLayout("evaluate", files=EVALUATION_FILES, resumable=False, dataset_inputs=True)
"""The evaluate job's output layout: one step, no partial state to resume."""
HOW_TO_GET_IDENTITIES = (
    "annotate with --set input.identity_from_folder=true (identity = parent folder) or "
    "input.identity_column=<manifest column>, or evaluate with --set evaluate.identity_source=folder"
)


class EvaluationInputError(UserError, ValueError):
    """The annotations cannot be evaluated as configured; the message names the column, row or file."""


# ----------------------------------------------------------------------------------------------- output


def open_evaluation_output(
    cfg: EvaluateJob, plot_uri: str, files: list[AnnotationFile], *, dry_run: bool = False
) -> RunState:
    """Check ``output.uri`` against ``output.mode`` (:func:`~froq_ray.storage.output.open_output` with
    :data:`OUTPUT`; the annotation ``files`` are the input, digested by name, size and modification time).
    ``error_if_exists`` also refuses an existing ``evaluate.plot`` file outside the output. ``dry_run``: check
    only (:mod:`froq_ray.pipeline.outputs`). Raises :class:`OutputStateError`."""
    out = cfg.output
    if out.mode == "error_if_exists" and plot_uri != join_uri(out.uri, "edc.png"):
        pfs, ppath = open_fs(plot_uri, out.storage_options)
        if pfs.exists(ppath):
            raise OutputStateError(
                f"evaluate.plot {plot_uri} already exists and output.mode is error_if_exists: choose another "
                "plot path, or set output.mode to resume or overwrite"
            )
    return open_files_job_output(cfg, OUTPUT, files, dry_run=dry_run)


# ------------------------------------------------------------------------------------------ annotations


def _annotation_files(cfg: EvaluateJob) -> list[AnnotationFile]:
    """The annotation files of ``evaluate.annotations`` (:func:`froq_ray.storage.annotations.annotation_files`:
    a folder's parts, a file, a glob); :class:`EvaluationInputError` when there are none."""
    ev = cfg.evaluate
    check_reachable(ev.annotations, ev.storage_options)
    return annotation_files([ev.annotations], ev.storage_options, error=EvaluationInputError)


def _closest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_columns(file: AnnotationFile, schema: pa.Schema, cfg: EvaluateJob) -> None:
    """Check that the annotation schema (of ``file``) holds every column the evaluation reads.

    Raises :class:`EvaluationInputError` naming the file and the job that writes a missing ``path`` /
    ``status`` / ``embedding``, or the config key, the closest column name and (for quality columns) the
    annotation's own numeric columns; internal fields (names starting with ``_``) are not offered.
    """
    ev = cfg.evaluate
    where = file.uri
    own = [f for f in schema if not f.name.startswith("_")]
    names = [f.name for f in own]
    numeric = [f.name for f in own if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)]
    require_columns(
        file,
        schema,
        ["path", "status", EMBEDDING],
        hint="the EDC compares embeddings of annotate rows",
        error=EvaluationInputError,
    )
    for column in ev.quality_columns:
        if column not in numeric:
            what = "is not numeric" if column in names else "is not a column"
            raise EvaluationInputError(
                f"evaluate.quality_columns: {column!r} {what} of {where}{_closest(column, numeric)}; its numeric "
                f"columns: {', '.join(numeric)}"
            )
    if ev.identity_source == "column" and ev.identity_column not in names:
        raise EvaluationInputError(
            f"evaluate.identity_column: {ev.identity_column!r} is not a column of {where}"
            f"{_closest(ev.identity_column, names)}; to evaluate without one, {HOW_TO_GET_IDENTITIES}"
        )


def read_annotations(cfg: EvaluateJob, files: list[AnnotationFile] | None = None) -> pa.Table:
    """The columns the evaluation needs (``path``, ``status``, ``embedding``, the quality columns and, with
    ``identity_source=column``, the identity column) of every annotation file (default: those of
    ``evaluate.annotations``), in file order; each file's columns are checked first (:func:`check_columns`)."""
    ev = cfg.evaluate
    columns = ["path", "status", EMBEDDING, *ev.quality_columns]
    if ev.identity_source == "column":
        columns.append(ev.identity_column)
    columns = list(dict.fromkeys(columns))
    tables = [
        read_table(
            f,
            columns,
            (PERCENTILE_COLUMN,),
            error=EvaluationInputError,
            check=partial(check_columns, f, cfg=cfg),
        )
        for f in (files if files is not None else _annotation_files(cfg))
    ]
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")


def identities_of(df: pd.DataFrame, cfg: EvaluateJob) -> np.ndarray:
    """One identity label (str) per ok row; :class:`EvaluationInputError` when rows have none, saying how to
    provide them."""
    ev = cfg.evaluate
    values = df[ev.identity_column].tolist() if ev.identity_source == "column" else None
    ids = identities(df["path"].tolist(), ev.identity_source, values)
    if ev.identity_source == "folder":
        return ids
    missing = pd.isna(ids)
    if missing.all():
        raise EvaluationInputError(
            f"{ev.annotations} has no identities (column {ev.identity_column!r} is null in all {len(df)} ok "
            f"rows): the EDC needs them; {HOW_TO_GET_IDENTITIES}"
        )
    if missing.any():
        first = df["path"].to_numpy()[np.flatnonzero(missing)[0]]
        raise EvaluationInputError(
            f"{int(missing.sum())} of {len(df)} ok rows have no {ev.identity_column!r} (first: {first}); "
            f"{HOW_TO_GET_IDENTITIES}"
        )
    return np.array([str(i) for i in ids], dtype=object)


def check_pairs(identities: np.ndarray) -> None:
    """The EDC needs genuine and impostor pairs: at least one identity with two images and two identities."""
    plan = plan_pairs(identities)
    distinct = np.unique(identities)
    if plan.n_impostor == 0:
        raise EvaluationInputError(
            f"all {plan.n_images} ok images have one identity ({distinct[0]!r}), so there are no impostor pairs: "
            f"the EDC needs at least two identities; {HOW_TO_GET_IDENTITIES}"
        )
    if plan.n_genuine == 0:
        raise EvaluationInputError(
            f"each of the {distinct.size} identities has one ok image, so there are no genuine pairs: the EDC "
            "needs identities with at least two images"
        )


def _quality_arrays(ok: pd.DataFrame, cfg: EvaluateJob) -> dict[str, np.ndarray]:
    qualities = {}
    for name in cfg.evaluate.quality_columns:
        values = ok[name].to_numpy(np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            raise EvaluationInputError(
                f"evaluate.quality_columns: {name!r} is null, NaN or infinite in {int(bad.sum())} ok rows (first: "
                f"{ok['path'].iloc[int(np.flatnonzero(bad)[0])]})"
            )
        qualities[name] = values
    return qualities


def _score_files(cfg: EvaluateJob) -> list[AnnotationFile]:
    """The ``evaluate.scores`` files (digested with the annotations, so a changed score file is re-evaluated);
    :class:`~froq_ray.evaluation.external.ScoreFileError` when one does not exist."""
    out = []
    for uri in cfg.evaluate.scores:
        check_reachable(uri, cfg.evaluate.storage_options)
        fs, path = open_fs(uri, cfg.evaluate.storage_options)
        if not fs.isfile(path):
            raise ScoreFileError(f"evaluate.scores: {uri} does not exist (or is not a file)")
        out.append(AnnotationFile(fs, path))
    return out


def external_scores(ok: pd.DataFrame, not_ok_paths: np.ndarray, cfg: EvaluateJob) -> ScoreJoin | None:
    """Read ``evaluate.scores`` and join them to the ok rows by exact path (:mod:`froq_ray.evaluation.external`);
    the skips are logged with up to :data:`EXAMPLES` paths each. ``None`` without score files."""
    ev = cfg.evaluate
    if not ev.scores:
        return None
    files = [read_scores(uri, ev.storage_options) for uri in ev.scores]
    joined = join_scores(ok["path"].to_numpy(object), files, ev.quality_columns, not_ok_paths)
    for what, per_file in (
        ("ok annotation rows have no score in", joined.missing),
        ("score rows match no annotation row in", joined.unmatched),
        ("score rows match an annotation row that is not ok in", joined.not_ok),
    ):
        for uri, paths in per_file.items():
            if paths:
                log.warning(
                    "%d %s %s (skipped; first: %s)", len(paths), what, uri, ", ".join(paths[:EXAMPLES])
                )
    log.info(
        "external scores %s joined by exact path: %d of %d ok images have every score",
        ", ".join(joined.source),
        int(joined.keep.sum()),
        len(ok),
    )
    return joined


def _join_summary(joined: ScoreJoin, cfg: EvaluateJob) -> dict:
    def named(per_file: dict[str, list[str]]) -> dict:
        return {uri: {"count": len(p), "first": p[:EXAMPLES]} for uri, p in per_file.items()}

    return {
        "files": list(cfg.evaluate.scores),
        "columns": joined.source,
        "lower_is_better": list(cfg.evaluate.lower_is_better),
        "join": "path, exactly as written",
        "images_evaluated": int(joined.keep.sum()),
        "annotation_rows_without_score": named(joined.missing),
        "score_rows_without_annotation": named(joined.unmatched),
        "score_rows_of_rows_not_ok": named(joined.not_ok),
        "skipped_list": "skipped_scores.csv",
    }


def _curves(curves: dict) -> dict:
    """Per method, the EDC points for the manifest: discard fractions, FNMR, the ideal curve, the random
    (expected) FNMR and, with a bootstrap, the band; NaN as null."""

    def listed(values) -> list:
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]

    out = {}
    for name, res in curves.items():
        out[name] = {
            "discard": listed(res.discard),
            "fnmr": listed(res.fnmr),
            "ideal": listed(res.ideal),
            "random": res.fnmr0,
        }
        if res.band is not None:
            out[name] |= {
                "fnmr_lo": listed(res.band.fnmr_lo),
                "fnmr_hi": listed(res.band.fnmr_hi),
                "pauc_undefined_replicates": {f"{k:g}": v for k, v in res.band.undefined.items()},
            }
    return out


def _orient(qualities: dict[str, np.ndarray], cfg: EvaluateJob) -> dict[str, np.ndarray]:
    """Negate the ``evaluate.lower_is_better`` columns, so that higher is better for every method."""
    lower = cfg.evaluate.lower_is_better
    unknown = [name for name in lower if name not in qualities]
    if unknown:
        raise EvaluationInputError(
            f"evaluate.lower_is_better: {unknown[0]!r} is not an evaluated column"
            f"{_closest(unknown[0], list(qualities))}; evaluated: {', '.join(qualities)}"
        )
    return {name: -values if name in lower else values for name, values in qualities.items()}


# ---------------------------------------------------------------------------------------------- the job


def run_evaluate(cfg: EvaluateJob) -> dict:
    """Evaluate the quality columns of an annotate output; returns the manifest written to ``output.uri``.

    Writes ``edc.md``, ``edc.csv``, ``thresholds.csv`` (per quality column and drop fraction 1/5/10/20/30 %: the
    quality threshold, the ``quality_percentile`` threshold when the annotations hold that column for
    ``quality``, and the FNMR at the fixed FMR after dropping: :mod:`froq_ray.evaluation.thresholds`),
    ``_froq/manifest.json`` to ``output.uri`` and the EDC PNG to ``evaluate.plot``
    (default ``<output.uri>/edc.png``). With ``evaluate.scores`` each external score column is evaluated beside
    the quality columns on the ok rows that have every score, and the skipped paths go to
    ``skipped_scores.csv``; with ``evaluate.bootstrap`` > 0 the table and plot get 95 % identity-bootstrap bands;
    small-sample warnings go to the log, ``edc.md`` and the manifest (docs/evaluation-protocol.md). Raises
    :class:`EvaluationInputError` (annotations unusable: missing columns, no identities, no genuine or no
    impostor pairs, non-finite qualities, unknown ``lower_is_better`` column),
    :class:`~froq_ray.evaluation.external.ScoreFileError` (a score file unusable) and
    :class:`~froq_ray.storage.run_state.OutputStateError` (output refused by ``output.mode``), all one line.
    """
    started_at, clock = utc_now(), time.perf_counter()
    ev, out = cfg.evaluate, cfg.output
    plot_uri = ev.plot or join_uri(out.uri, "edc.png")
    check_reachable(out.uri, out.storage_options, access="write")  # an unreachable output fails first
    files = _annotation_files(cfg)
    inputs = files + _score_files(cfg)
    # a dry run first: the output is opened for real (and an overwritten run's files deleted) only once the
    # evaluation is computed, so a refused input leaves the output as it was (pipeline/outputs.py)
    state = open_evaluation_output(cfg, plot_uri, inputs, dry_run=True)
    if already_finished(cfg, state):
        return read_manifest(Location.of(out))
    table = read_annotations(cfg, files)
    seconds = {"read": time.perf_counter() - clock}
    df = table.drop_columns([EMBEDDING]).to_pandas()
    matrix, has_embedding = embedding_matrix(table.column(EMBEDDING))
    is_ok = (df["status"] == st.OK).to_numpy()
    ok = df[is_ok].reset_index(drop=True)
    rows_not_ok = int(len(df) - len(ok))
    if len(ok) < 2:
        raise EvaluationInputError(f"only {len(ok)} rows with status ok in {ev.annotations}")
    no_embedding = ~has_embedding[is_ok]
    if no_embedding.any():
        raise EvaluationInputError(
            f"{int(no_embedding.sum())} ok rows have no embedding (null, not finite or all zero; first: "
            f"{ok['path'].iloc[int(np.flatnonzero(no_embedding)[0])]})"
        )
    identities = identities_of(ok, cfg)
    qualities = _quality_arrays(ok, cfg)
    embeddings = matrix[is_ok]
    joined = external_scores(ok, df["path"].to_numpy(object)[~is_ok], cfg)
    if joined is not None:
        ok, identities, embeddings = (
            ok[joined.keep].reset_index(drop=True),
            identities[joined.keep],
            embeddings[joined.keep],
        )
        qualities = {name: values[joined.keep] for name, values in qualities.items()} | joined.scores
    qualities = _orient(qualities, cfg)
    check_pairs(identities)
    log.info(
        "evaluating %d quality column(s) on %d images of %d identities (%d rows not ok skipped)",
        len(qualities),
        len(ok),
        len(set(identities)),
        rows_not_ok,
    )
    clock = time.perf_counter()
    curves = compute_edc_curves(
        embeddings,
        identities,
        qualities,
        ev.fmr,
        threshold=ev.threshold_mode,
        limits=ev.discard_limits,
        bootstrap=ev.bootstrap,
    )
    seconds["edc"] = time.perf_counter() - clock
    table = results_table(curves)
    warnings = [line for name, res in curves.items() for line in small_sample_warnings(name, res, res.band)]
    for line in warnings:
        log.warning("small sample: %s", line)
    markdown = edc_markdown_table(table) + "".join(f"\n> **Warning:** {line}\n" for line in warnings)
    percentiles = (
        {"quality": ok[PERCENTILE_COLUMN].to_numpy(np.float64)}
        if PERCENTILE_COLUMN in ok and ok[PERCENTILE_COLUMN].notna().all()
        else None
    )
    thresholds = threshold_tables(embeddings, identities, qualities, percentiles, fmr=ev.fmr)
    state = open_evaluation_output(cfg, plot_uri, inputs)
    fs, path = state.fs, state.path
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_edc(
            curves, f"{tmp}/edc.png", title=f"EDC: {posixpath.basename(ev.annotations.rstrip('/'))}"
        )
        pfs, ppath = open_fs(plot_uri, out.storage_options)
        pfs.pipe_file(ppath, png.read_bytes())
    fs.pipe_file(f"{path}/edc.md", (markdown + "\n").encode())
    fs.pipe_file(f"{path}/edc.csv", table.to_csv(index=False).encode())
    fs.pipe_file(f"{path}/thresholds.csv", thresholds.to_csv(index=False).encode())
    if joined is not None:
        fs.pipe_file(f"{path}/skipped_scores.csv", joined.skipped_rows().to_csv(index=False).encode())
    print(markdown)
    print(thresholds.to_string(index=False))
    seconds["write"] = time.perf_counter() - clock
    written = write_job_manifest(
        cfg,
        state,
        started_at=started_at,
        counts_by_status=status_counts(df["status"]),
        stage_seconds=seconds,
        results={
            "annotations": ev.annotations,
            "images": len(ok),
            "rows_not_ok": rows_not_ok,
            "identities": len(set(identities)),
            "edc": json.loads(table.to_json(orient="records")),
            "thresholds": json.loads(thresholds.to_json(orient="records")),
            "plot": plot_uri,
            "bootstrap": {
                "replicates": ev.bootstrap,
                "seed": 0,
                "percentiles": list(BAND),
                "resampled": "identities",
            },
            "curves": _curves(curves),
            "warnings": warnings,
            **({"scores": _join_summary(joined, cfg)} if joined is not None else {}),
        },
    )
    log.info("evaluation written to %s (edc.md, edc.csv, thresholds.csv, %s)", out.uri, plot_uri)
    return written
