"""The evaluate job: annotation Parquet + identity labels -> EDC/pAUC table (markdown, CSV, JSON) + EDC PNG.

Runs on the driver: it reads only the columns it needs and streams the pair similarities in blocks
(``evaluation.protocol``), so a few million pairs need no cluster. The protocol (pairs, threshold, discarding,
areas) is documented in ``docs/evaluation-protocol.md``.

Evaluation is one step, so ``output.mode`` has no partial state to continue: ``resume`` (the default) and
``overwrite`` both recompute and replace the evaluation files (``overwrite`` deletes the earlier ones first),
``error_if_exists`` refuses an output that already holds any of them.
"""

from __future__ import annotations

import difflib
import json
import logging
import posixpath
import tempfile

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import status as st
from ..config import EvaluateJob
from ..engine.runner import software_versions
from ..errors import UserError
from ..evaluation.pairs import plan_pairs
from ..evaluation.plot import plot_edc
from ..evaluation.protocol import compute_edc_curves, edc_markdown_table, results_table
from ..storage.fs import check_reachable, join_uri, open_fs, read_json
from ..storage.manifest import LEGACY_MANIFEST_FILE, MANIFEST_FILE, write_manifest
from ..storage.run_state import LEGACY_RUN_FILE, RUN_FILE, OutputStateError, check_writable
from ..storage.schema import EMBEDDING
from ..storage.shards import LEGACY_MARKER_RE, MARKER_RE, PART_RE, STATE_DIR, list_names

log = logging.getLogger("froq_ray")

EVALUATION_FILES = ("edc.md", "edc.csv", "edc.png", MANIFEST_FILE)
"""What an evaluation writes into ``output.uri`` (``edc.png`` only when ``evaluate.plot`` is null)."""
HOW_TO_GET_IDENTITIES = (
    "annotate with --set input.identity_from_folder=true (identity = parent folder) or "
    "input.identity_column=<manifest column>, or evaluate with --set evaluate.identity_source=folder"
)


class EvaluationInputError(UserError, ValueError):
    """The annotations cannot be evaluated as configured; the message names the column, row or file."""


# ----------------------------------------------------------------------------------------------- output


def check_evaluation_output(cfg: EvaluateJob, plot_uri: str) -> list[str]:
    """Check ``output.uri`` against ``output.mode``; returns the names of earlier evaluation files in it.

    Refused in every mode (:class:`OutputStateError`): an output that holds another job's run (shards,
    ``_froq/run.json``, markers, or a ``_froq/manifest.json`` of another job; or the same files of the older
    layout beside the parts), which the evaluation's ``_froq/manifest.json`` would overwrite. With
    ``error_if_exists``: an output holding any of :data:`EVALUATION_FILES` (or an existing ``evaluate.plot`` file).
    """
    out = cfg.output
    fs, path = open_fs(out.uri, out.storage_options)
    fs.invalidate_cache(path)
    state = [f"{STATE_DIR}/{n}" for n in list_names(fs, f"{path}/{STATE_DIR}")]
    names = list_names(fs, path) + state
    foreign = [
        n for n in names if n in (RUN_FILE, LEGACY_RUN_FILE) or PART_RE.match(n) or LEGACY_MARKER_RE.match(n)
    ]
    foreign += [n for n in state if MARKER_RE.match(posixpath.basename(n))]
    for manifest in (MANIFEST_FILE, LEGACY_MANIFEST_FILE):
        if manifest in names and not foreign:
            job = read_json(fs, f"{path}/{manifest}").get("job")
            if job != "evaluate":
                foreign = [f"{manifest} of a {job!r} run"]
    if foreign:
        raise OutputStateError(
            f"output {out.uri} holds another job's run ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}): evaluate writes {MANIFEST_FILE} there, so choose another "
            "output folder"
        )
    existing = [n for n in EVALUATION_FILES if n in names]
    if out.mode == "error_if_exists":
        pfs, ppath = open_fs(plot_uri, out.storage_options)
        if plot_uri != join_uri(out.uri, "edc.png") and pfs.exists(ppath):
            existing.append(plot_uri)
        if existing:
            raise OutputStateError(
                f"output {out.uri} already holds an evaluation ({', '.join(existing)}) and output.mode is "
                "error_if_exists: choose another output, or use --mode overwrite (or resume: evaluate recomputes)"
            )
    return existing


# ------------------------------------------------------------------------------------------ annotations


def _annotation_files(cfg: EvaluateJob) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    ev = cfg.evaluate
    check_reachable(ev.annotations, ev.storage_options)
    fs, path = open_fs(ev.annotations, ev.storage_options)
    fs.invalidate_cache(path)  # parts written by worker tasks, maybe in this process's run
    if not fs.exists(path):
        raise EvaluationInputError(f"annotations not found: {ev.annotations}")
    files = (
        [path]
        if not fs.isdir(path)
        else sorted(p for p in fs.ls(path, detail=False) if PART_RE.match(posixpath.basename(p)))
    )
    if not files:
        raise EvaluationInputError(f"no part-*.parquet files in {ev.annotations}")
    return fs, files


def _closest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_columns(schema: pa.Schema, cfg: EvaluateJob, where: str) -> None:
    """Check that the annotation schema holds every column the evaluation reads.

    Raises :class:`EvaluationInputError` naming the config key, the closest column name and (for quality
    columns) the annotation's own numeric columns; internal fields (names starting with ``_``) are not offered.
    """
    ev = cfg.evaluate
    own = [f for f in schema if not f.name.startswith("_")]
    names = [f.name for f in own]
    numeric = [f.name for f in own if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)]
    for required in ("path", "status"):
        if required not in names:
            raise EvaluationInputError(f"{where}: no {required!r} column: not an annotate output")
    if EMBEDDING not in names:
        raise EvaluationInputError(
            f"{where}: no {EMBEDDING!r} column: annotate with scoring.write_embedding=true (the EDC compares "
            "embeddings)"
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


def read_annotations(cfg: EvaluateJob) -> pd.DataFrame:
    """The columns the evaluation needs (``path``, ``status``, ``embedding``, the quality columns and, with
    ``identity_source=column``, the identity column) of every ``part-*.parquet`` file, in file order."""
    ev = cfg.evaluate
    columns = ["path", "status", EMBEDDING, *ev.quality_columns]
    if ev.identity_source == "column":
        columns.append(ev.identity_column)
    columns = list(dict.fromkeys(columns))
    fs, files = _annotation_files(cfg)
    frames = []
    for f in files:
        with fs.open(f, "rb") as handle:
            table = pq.ParquetFile(handle)
            check_columns(table.schema_arrow, cfg, f)
            frames.append(table.read(columns=columns).to_pandas())
    return pd.concat(frames, ignore_index=True)


def identities_of(df: pd.DataFrame, cfg: EvaluateJob) -> np.ndarray:
    """One identity label (str) per ok row; :class:`EvaluationInputError` when rows have none, saying how to
    provide them."""
    ev = cfg.evaluate
    if ev.identity_source == "folder":
        return np.array([posixpath.basename(posixpath.dirname(str(p))) for p in df["path"]], dtype=object)
    ids = df[ev.identity_column]
    missing = ids.isna().to_numpy()
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
    return ids.astype(str).to_numpy(dtype=object)


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


# ---------------------------------------------------------------------------------------------- the job


def run_evaluate(cfg: EvaluateJob) -> dict:
    """Evaluate the quality columns of an annotate output; returns the manifest written to ``output.uri``.

    Writes ``edc.md``, ``edc.csv``, ``_froq/manifest.json`` to ``output.uri`` and the EDC PNG to ``evaluate.plot``
    (default ``<output.uri>/edc.png``). Raises :class:`EvaluationInputError` (annotations unusable: missing
    columns, no identities, no genuine or no impostor pairs, non-finite qualities) and
    :class:`~froq_ray.storage.run_state.OutputStateError` (output refused by ``output.mode``), both one line.
    """
    ev, out = cfg.evaluate, cfg.output
    plot_uri = ev.plot or join_uri(out.uri, "edc.png")
    check_writable(out.uri, out.storage_options)
    earlier = check_evaluation_output(cfg, plot_uri)
    df = read_annotations(cfg)
    ok = df[df["status"] == st.OK].reset_index(drop=True)
    if len(ok) < 2:
        raise EvaluationInputError(f"only {len(ok)} rows with status ok in {ev.annotations}")
    no_embedding = ok[EMBEDDING].isna().to_numpy()
    if no_embedding.any():
        raise EvaluationInputError(
            f"{int(no_embedding.sum())} ok rows have no embedding (first: "
            f"{ok['path'].iloc[int(np.flatnonzero(no_embedding)[0])]})"
        )
    identities = identities_of(ok, cfg)
    check_pairs(identities)
    qualities = _quality_arrays(ok, cfg)
    embeddings = np.stack(ok[EMBEDDING].to_list()).astype(np.float32)
    log.info(
        "evaluating %d quality column(s) on %d images of %d identities (%d rows not ok skipped)",
        len(qualities),
        len(ok),
        len(set(identities)),
        len(df) - len(ok),
    )
    curves = compute_edc_curves(
        embeddings, identities, qualities, ev.fmr, threshold=ev.threshold_mode, limits=ev.discard_limits
    )
    table = results_table(curves)
    markdown = edc_markdown_table(table)
    fs, path = open_fs(out.uri, out.storage_options)
    if out.mode == "overwrite" and earlier:
        log.info("output.mode=overwrite: deleting the earlier %s in %s", ", ".join(earlier), out.uri)
        for name in earlier:
            fs.rm_file(f"{path}/{name}")
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_edc(
            curves, f"{tmp}/edc.png", title=f"EDC: {posixpath.basename(ev.annotations.rstrip('/'))}"
        )
        pfs, ppath = open_fs(plot_uri, out.storage_options)
        pfs.pipe_file(ppath, png.read_bytes())
    fs.pipe_file(f"{path}/edc.md", (markdown + "\n").encode())
    fs.pipe_file(f"{path}/edc.csv", table.to_csv(index=False).encode())
    print(markdown)
    manifest = {
        "job": "evaluate",
        "annotations": ev.annotations,
        "images": len(ok),
        "rows_not_ok": int(len(df) - len(ok)),
        "identities": len(set(identities)),
        "results": json.loads(table.to_json(orient="records")),
        "plot": plot_uri,
        "versions": software_versions(),
    }
    write_manifest(out.uri, out.storage_options, manifest)
    log.info("evaluation written to %s (edc.md, edc.csv, %s)", out.uri, plot_uri)
    return manifest
