"""The evaluate job: annotation Parquet + identity labels -> EDC/pAUC table (markdown, CSV, JSON) + EDC PNG.

Runs on the driver: it reads only the columns it needs and streams the pair similarities in blocks
(``evaluation.protocol``), so a few million pairs need no cluster.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tempfile

import numpy as np
import pandas as pd

from .. import status as st
from ..config import EvaluateJob
from ..errors import UserError
from ..evaluation.plot import plot_edc
from ..evaluation.protocol import compute_edc_curves, edc_markdown_table, results_table
from ..storage.fs import join_uri, open_fs
from ..storage.manifest import write_manifest
from ..storage.run_state import check_writable
from ..storage.schema import EMBEDDING
from .runner import software_versions

log = logging.getLogger("froq_ray")


class EvaluationInputError(UserError, ValueError):
    pass


def read_annotations(cfg: EvaluateJob) -> pd.DataFrame:
    ev = cfg.evaluate
    columns = ["path", "status", EMBEDDING, *ev.quality_columns]
    if ev.identity_source == "column":
        columns.append(ev.identity_column)
    fs, path = open_fs(ev.annotations, ev.storage_options)
    if not fs.exists(path):
        raise EvaluationInputError(f"annotations not found: {ev.annotations}")
    files = (
        [path]
        if not fs.isdir(path)
        else sorted(p for p in fs.ls(path, detail=False) if posixpath.basename(p).startswith("part-"))
    )
    if not files:
        raise EvaluationInputError(f"no part-*.parquet files in {ev.annotations}")
    frames = []
    for f in files:
        with fs.open(f, "rb") as handle:
            try:
                frames.append(pd.read_parquet(handle, columns=list(dict.fromkeys(columns))))
            except (KeyError, ValueError) as exc:
                raise EvaluationInputError(
                    f"{f}: cannot read columns {columns} ({exc}); annotate with scoring.write_embedding=true and "
                    "check evaluate.quality_columns / evaluate.identity_column"
                ) from exc
    return pd.concat(frames, ignore_index=True)


def identities_of(df: pd.DataFrame, cfg: EvaluateJob) -> np.ndarray:
    ev = cfg.evaluate
    if ev.identity_source == "folder":
        return np.array([posixpath.basename(posixpath.dirname(str(p))) for p in df["path"]], dtype=object)
    ids = df[ev.identity_column]
    if ids.isna().any():
        raise EvaluationInputError(f"{int(ids.isna().sum())} ok rows have no {ev.identity_column!r}")
    return ids.astype(str).to_numpy(dtype=object)


def run_evaluate(cfg: EvaluateJob) -> dict:
    ev, out = cfg.evaluate, cfg.output
    check_writable(out.uri, out.storage_options)
    df = read_annotations(cfg)
    ok = df[df["status"] == st.OK].reset_index(drop=True)
    if len(ok) < 2:
        raise EvaluationInputError(f"only {len(ok)} rows with status ok in {ev.annotations}")
    if ok[EMBEDDING].isna().any():
        raise EvaluationInputError("some ok rows have no embedding")
    embeddings = np.stack(ok[EMBEDDING].to_numpy()).astype(np.float32)
    identities = identities_of(ok, cfg)
    qualities = {name: ok[name].to_numpy(np.float64) for name in ev.quality_columns}
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
    plot_uri = ev.plot or join_uri(out.uri, "edc.png")
    fs, path = open_fs(out.uri, out.storage_options)
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
