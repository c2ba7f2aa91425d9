"""The calibrate job: pseudo-labels and every candidate layer's norm per image (actors, one pass per batch)
-> driver-side layer selection -> the JSON calibration artifact, beside a Parquet of per-image results."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import status as st
from ..config import CalibrateJob
from ..engine.modes import MODES
from ..engine.runner import (
    RunResult,
    load_job_model,
    prepare_job,
    run_shards,
    scoring_manifest,
    scoring_stage_config,
    summary_lines,
    total_counts,
)
from ..errors import UserError
from ..quality.artifact import CalibrationSetDigest
from ..quality.calibration import NORMS_KEY, PSEUDO_LABEL_KEY, build_artifact, calibration_layers
from ..quality.perturbations import PerturbationSettings
from ..storage.annotations import annotation_files, list_matrix, read_table
from ..storage.fs import join_uri
from ..storage.location import Location
from ..storage.manifest import write_manifest
from ..storage.output import OutputLayout
from ..storage.shards import STATE_DIR
from .artifacts import write_artifact

log = logging.getLogger("froq_ray")

ARTIFACT_FILE = f"{STATE_DIR}/calibration.json"
"""The artifact, relative to the output folder: in ``_froq/`` with the bookkeeping, so that every Parquet reader
reads the folder's parts alone (:mod:`froq_ray.storage.shards`)."""


OUTPUT = OutputLayout("calibrate", shards=True)
"""What calibrate owns in its output folder: the shards and the ``_froq/`` records (the artifact included)."""

MODE = MODES["calibrate"]
"""The calibrate job's scoring mode: pseudo-label components + a fixed-size list of every candidate layer's norm
per image (:meth:`~froq_ray.engine.modes.ScoringMode.output_schema` decides the per-image Parquet's schema)."""


class CalibrationInputError(UserError, ValueError):
    """The inputs cannot calibrate a model (too few decodable images); the message gives the counts."""


def read_observations(cfg: CalibrateJob, n_layers: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """The ok rows of every shard of the output, sorted by path: their paths, and float32 ``layer_norms``
    ``(N, n_layers)`` and ``pseudo_label`` ``(N,)``. Raises :class:`CalibrationInputError` with fewer than 3."""
    columns = ["path", "status", PSEUDO_LABEL_KEY, NORMS_KEY]
    files = annotation_files([cfg.output.uri], cfg.output.storage_options, error=CalibrationInputError)
    table = pa.concat_tables([read_table(f, columns, error=CalibrationInputError) for f in files])
    table = table.take(
        pa.array(np.argsort(table.column("path").to_numpy(zero_copy_only=False), kind="stable"))
    )
    status = table.column("status").to_numpy(zero_copy_only=False)
    ok = table.filter(pa.array(status == st.OK))
    if ok.num_rows < 3:
        counts = pd.Series(status).value_counts().to_dict()
        raise CalibrationInputError(
            f"calibration needs at least 3 decodable images, got {ok.num_rows} "
            f"(row statuses in {cfg.output.uri}: {counts})"
        )
    norms = list_matrix(ok.column(NORMS_KEY))
    if norms.shape[1] != n_layers:
        raise CalibrationInputError(
            f"{cfg.output.uri}: {NORMS_KEY} holds {norms.shape[1]} layer(s), the model has {n_layers} candidates"
        )
    return ok.column("path").to_pylist(), {
        NORMS_KEY: norms,
        PSEUDO_LABEL_KEY: ok.column(PSEUDO_LABEL_KEY).to_numpy(zero_copy_only=False).astype(np.float32),
    }


def digest_extra(model, layers) -> dict[str, str]:
    """What the calibrate job folds into its config digest besides the config: the weights' sha256 and the
    sha256 of its candidate layer names (``layers``, in order), so other weights or another network behind
    the same config refuse a resume."""
    return {
        "weights_sha256": model.weights_sha256,
        "candidate_layers": hashlib.sha256("\n".join(layers).encode()).hexdigest(),
    }


def run_calibrate(cfg: CalibrateJob, force: bool = False) -> dict:
    """Observe, select layers, write ``_froq/calibration.json`` (+ per-image Parquet and manifest) in output.uri."""
    model = load_job_model(cfg)
    layers, calls = calibration_layers(model)
    job = prepare_job(cfg, model, digest_extra(model, layers), force, OUTPUT)
    log.info(
        "calibrating %s on %d images: %d candidate layers, %d of %d shard(s) to observe",
        model.model_id,
        job.inputs.total_rows,
        len(layers),
        len(job.pending),
        len(job.shards),
    )
    result = RunResult({}, 0, 0, 0.0, np.empty(0))
    if job.pending:
        stage = scoring_stage_config(cfg, MODE.name, candidate_layers=tuple(layers))
        schema = MODE.output_schema(model, stage, candidate_layers=layers)
        result = run_shards(
            job,
            stage,
            schema,
            MODE.constants(model, None),
            None,
            no_progress_timeout_s=MODE.default_no_progress_timeout_s,
        )
    paths, observations = read_observations(cfg, len(layers))
    digest = CalibrationSetDigest()
    digest.add_ids(paths)
    settings = PerturbationSettings.from_dict(cfg.scoring.perturbation.model_dump())
    artifact = build_artifact(
        model,
        layers,
        observations,
        settings,
        cfg.calibration.top_n,
        digest.result(),
        cfg.scoring.precision,
        calls,
    )
    artifact_uri = join_uri(cfg.output.uri, ARTIFACT_FILE)
    write_artifact(artifact, artifact_uri, cfg.output.storage_options)
    log.info(
        "selected %d layer(s): %s (Spearman %.4f with the pseudo-labels); artifact %s (calibration_id %s)",
        len(artifact.selected_layers),
        ", ".join(artifact.selected_layers),
        artifact.best_rho,
        artifact_uri,
        artifact.calibration_id,
    )
    manifest = scoring_manifest(job, result, total_counts(job, result))
    manifest.results["calibration"] = {
        "artifact": artifact_uri,
        "calibration_id": artifact.calibration_id,
        "selected_layers": artifact.selected_layers,
        "best_rho": artifact.best_rho,
        "images_used": len(paths),
        "candidate_layers": len(layers),
        "layer_norms_columns": layers,
    }
    written = write_manifest(Location.of(cfg.output), manifest)
    for line in summary_lines(written, result.quality):
        log.info(line)
    return written
