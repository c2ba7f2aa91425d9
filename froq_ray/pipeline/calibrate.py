"""The calibrate job: pseudo-labels and every candidate layer's norm per image (actors, one pass per batch)
-> driver-side layer selection -> the JSON calibration artifact, beside a Parquet of per-image results."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from .. import status as st
from ..config import CalibrateJob
from ..engine.modes import MODES
from ..engine.runner import (
    RunResult,
    base_manifest,
    load_job_model,
    prepare_job,
    run_shards,
    scoring_stage_config,
    summary_lines,
    total_counts,
)
from ..errors import UserError
from ..quality.artifact import CalibrationSetDigest
from ..quality.calibration import NORMS_KEY, PSEUDO_LABEL_KEY, build_artifact, calibration_layers
from ..quality.perturbations import PerturbationSettings
from ..storage.fs import join_uri, open_fs
from ..storage.manifest import write_manifest
from ..storage.shards import PART_RE, STATE_DIR
from .artifacts import write_artifact

log = logging.getLogger("froq_ray")

ARTIFACT_FILE = f"{STATE_DIR}/calibration.json"
"""The artifact, relative to the output folder: in ``_froq/`` with the bookkeeping, so that every Parquet reader
reads the folder's parts alone (:mod:`froq_ray.storage.shards`)."""


MODE = MODES["calibrate"]
"""The calibrate job's scoring mode: pseudo-label components + a fixed-size list of every candidate layer's norm
per image (:meth:`~froq_ray.engine.modes.ScoringMode.output_schema` decides the per-image Parquet's schema)."""


class CalibrationInputError(UserError, ValueError):
    """The inputs cannot calibrate a model (too few decodable images); the message gives the counts."""


def read_observations(cfg: CalibrateJob, n_layers: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """The ok rows of every shard of the output, sorted by path."""
    fs, path = open_fs(cfg.output.uri, cfg.output.storage_options)
    fs.invalidate_cache(path)  # the parts were written by worker tasks, not through this (caching) client
    parts = sorted(p for p in fs.ls(path, detail=False) if PART_RE.match(p.rsplit("/", 1)[-1]))
    frames = []
    for part in parts:
        with fs.open(part, "rb") as f:
            frames.append(pd.read_parquet(f, columns=["path", "status", PSEUDO_LABEL_KEY, NORMS_KEY]))
    table = pd.concat(frames, ignore_index=True).sort_values("path", kind="mergesort")
    ok = table[table["status"] == st.OK]
    if len(ok) < 3:
        raise CalibrationInputError(
            f"calibration needs at least 3 decodable images, got {len(ok)} "
            f"(row statuses in {cfg.output.uri}: {table['status'].value_counts().to_dict()})"
        )
    norms = np.stack(ok[NORMS_KEY].to_numpy()).astype(np.float32).reshape(len(ok), n_layers)
    return list(ok["path"]), {NORMS_KEY: norms, PSEUDO_LABEL_KEY: ok[PSEUDO_LABEL_KEY].to_numpy(np.float32)}


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
    job = prepare_job(cfg, model, digest_extra(model, layers), force)
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
    manifest = base_manifest(job, result, total_counts(job, result))
    manifest["calibration"] = {
        "artifact": artifact_uri,
        "calibration_id": artifact.calibration_id,
        "selected_layers": artifact.selected_layers,
        "best_rho": artifact.best_rho,
        "images_used": len(paths),
        "candidate_layers": len(layers),
        "layer_norms_columns": layers,
    }
    write_manifest(cfg.output.uri, cfg.output.storage_options, manifest)
    for line in summary_lines(manifest, result.quality):
        log.info(line)
    return manifest
