"""The calibrate job: the target and every candidate layer's norm per image (actors, one pass per batch)
-> driver-side observer fit -> the JSON calibration artifact, beside a Parquet of per-image results.

``calibration.target: pseudo_label`` observes with the ``calibrate`` mode (the 76-pass perturbation
pseudo-label); ``cr`` / ``genuine`` with ``calibrate_labelled`` (one forward pass: norms + embedding, and the
same for ``calibration.degraded_copies`` seeded degraded copies); the target is then computed on the driver
from the embeddings and identities (:mod:`froq_ray.curation.calibration_target`). ``calibration.method``
chooses the greedy layer set or the linear observer (:func:`froq_ray.quality.calibration.build_artifact`)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import status as st
from ..config import CalibrateJob
from ..curation.calibration_target import build_artifact_from_labels
from ..engine.modes import DEGRADED_EMBEDDING, DEGRADED_NORMS, MODES, job_scoring_mode
from ..engine.runner import (
    RunResult,
    load_job_model,
    prepare_run,
    run_shards,
    scoring_stage_config,
    write_scoring_manifest,
)
from ..errors import UserError
from ..quality.artifact import CalibrationSetDigest
from ..quality.calibration import (
    EMBEDDING_KEY,
    NORMS_KEY,
    PSEUDO_LABEL_KEY,
    build_artifact,
    calibration_layers,
)
from ..quality.perturbations import PerturbationSettings
from ..storage.annotations import annotation_files, list_matrix, read_table
from ..storage.fs import join_uri
from ..storage.output import OutputLayout
from .artifacts import ARTIFACT_FILE, write_artifact

log = logging.getLogger("froq_ray")

"""The artifact, relative to the output folder: in ``_froq/`` with the bookkeeping, so that every Parquet reader
reads the folder's parts alone (:mod:`froq_ray.storage.shards`)."""


OUTPUT = OutputLayout("calibrate", shards=True)
"""What calibrate owns in its output folder: the shards and the ``_froq/`` records (the artifact included)."""

MODE = MODES["calibrate"]
"""The calibrate job's scoring mode for the pseudo-label target: pseudo-label components + a fixed-size list of
every candidate layer's norm per image (:meth:`~froq_ray.engine.modes.ScoringMode.output_schema` decides the
per-image Parquet's schema); the labelled targets use ``calibrate_labelled`` (:func:`job_scoring_mode`)."""


class CalibrationInputError(UserError, ValueError):
    """The inputs cannot calibrate a model (too few decodable images); the message gives the counts."""


def read_observations(
    cfg: CalibrateJob, n_layers: int, columns: tuple[str, ...] = (PSEUDO_LABEL_KEY, NORMS_KEY)
) -> tuple[list[str], dict[str, np.ndarray]]:
    """The ok rows of every shard of the output, sorted by path: (paths, {column: values}); list columns
    become (N, width) float32 arrays (``layer_norms``: (N, n_layers)), ``identity`` an object array, others
    float32 (N,). Raises :class:`CalibrationInputError` with fewer than 3 ok rows or another model's norms."""
    files = annotation_files([cfg.output.uri], cfg.output.storage_options, error=CalibrationInputError)
    table = pa.concat_tables(
        [read_table(f, ["path", "status", *columns], error=CalibrationInputError) for f in files]
    )
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
    out: dict[str, np.ndarray] = {}
    for column in columns:
        if column == "identity":
            out[column] = ok.column(column).to_numpy(zero_copy_only=False).astype(object)
        elif column in (NORMS_KEY, EMBEDDING_KEY, DEGRADED_NORMS, DEGRADED_EMBEDDING):
            out[column] = list_matrix(ok.column(column)).reshape(ok.num_rows, -1)
        else:
            out[column] = ok.column(column).to_numpy(zero_copy_only=False).astype(np.float32)
    if out[NORMS_KEY].shape[1] != n_layers:
        raise CalibrationInputError(
            f"{cfg.output.uri}: {NORMS_KEY} holds {out[NORMS_KEY].shape[1]} layer(s), the model has {n_layers} "
            "candidates (an output of another model: use --mode overwrite)"
        )
    return ok.column("path").to_pylist(), out


def labelled_artifact(cfg: CalibrateJob, model, layers: list[str], calls: dict[str, int]):
    """The artifact of a labelled-target calibration from the run's observations (module doc): each ok image
    and its ``degraded_copies`` copies (id ``<path>#degraded<c>``), the target computed against the clean
    images; images without an identity or a defined target are left out and counted in ``settings``."""
    c = cfg.calibration
    columns: tuple[str, ...] = ("identity", NORMS_KEY, EMBEDDING_KEY)
    if c.degraded_copies:
        columns += (DEGRADED_NORMS, DEGRADED_EMBEDDING)
    paths, obs = read_observations(cfg, len(layers), columns)
    identity = obs["identity"]
    labelled = np.array([isinstance(v, str) and v != "" for v in identity])
    if (~labelled).any():
        log.warning("%d calibration image(s) have no identity and are left out", int((~labelled).sum()))
    n, copies = int(labelled.sum()), c.degraded_copies
    ids = np.asarray(paths, dtype=object)[labelled]
    norms, emb, labels = obs[NORMS_KEY][labelled], obs[EMBEDDING_KEY][labelled], identity[labelled]
    sources = None
    if copies:
        dim = emb.shape[1]
        norms = np.concatenate([norms, obs[DEGRADED_NORMS][labelled].reshape(n * copies, len(layers))])
        emb = np.concatenate([emb, obs[DEGRADED_EMBEDDING][labelled].reshape(n * copies, dim)])
        labels = np.concatenate([labels, np.repeat(labels, copies)])
        ids = np.concatenate([ids, [f"{p}#degraded{k}" for p in ids for k in range(copies)]])
        sources = np.concatenate([np.arange(n), np.repeat(np.arange(n), copies)])
    try:
        return build_artifact_from_labels(
            model,
            layers,
            norms,
            emb,
            identities=labels,
            image_ids=list(ids),
            top_n=c.top_n,
            precision=cfg.scoring.precision,
            layer_calls=calls,
            target=c.target,
            method=c.method,
            linear_top_n=c.linear_top_n,
            folds=c.cv_folds,
            sources=sources,
            extra_settings={
                "images_without_identity": int((~labelled).sum()),
                "degraded_copies": copies,
                "degraded_seed": c.degraded_seed,
                "degraded_images": n * copies,
            },
        ), n
    except ValueError as exc:
        raise CalibrationInputError(f"calibration.target={c.target}: {exc}") from exc


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
    job = prepare_run(cfg, model, digest_extra(model, layers), force, layout=OUTPUT)
    log.info(
        "calibrating %s on %d images: %d candidate layers, %d of %d shard(s) to observe",
        model.model_id,
        job.inputs.total_rows,
        len(layers),
        len(job.pending),
        len(job.shards),
    )
    result = RunResult({}, 0, 0, 0.0, np.empty(0))
    mode = job_scoring_mode(cfg)
    if job.pending:
        stage = scoring_stage_config(cfg, mode.name, candidate_layers=tuple(layers))
        stage = dataclasses.replace(
            stage,
            quality_only=False,
            write_embedding=True,
            degraded_copies=cfg.calibration.degraded_copies,
            degraded_seed=cfg.calibration.degraded_seed,
        )
        schema = mode.output_schema(model, stage, candidate_layers=layers)
        result = run_shards(job, mode, stage, schema, calibration_id=None)
    c = cfg.calibration
    if c.target == "pseudo_label":
        columns = (PSEUDO_LABEL_KEY, NORMS_KEY) + (("identity",) if c.method == "linear" else ())
        paths, observations = read_observations(cfg, len(layers), columns)
        digest = CalibrationSetDigest()
        digest.add_ids(paths)
        settings = PerturbationSettings.from_dict(cfg.scoring.perturbation.model_dump())
        groups = observations.get("identity")
        if groups is not None and any(not isinstance(g, str) for g in groups):
            raise CalibrationInputError(
                "calibration.method=linear: "
                f"{sum(not isinstance(g, str) for g in groups)} calibration image(s) have no identity"
            )
        try:
            artifact = build_artifact(
                model,
                layers,
                observations,
                settings,
                top_n=c.top_n,
                calibration_set=digest.result(),
                precision=cfg.scoring.precision,
                layer_calls=calls,
                method=c.method,
                groups=groups,
                linear_top_n=c.linear_top_n,
                folds=c.cv_folds,
            )
        except ValueError as exc:
            raise CalibrationInputError(f"calibration.method={c.method}: {exc}") from exc
        images_used = len(paths)
    else:
        artifact, images_used = labelled_artifact(cfg, model, layers, calls)
    artifact_uri = join_uri(cfg.output.uri, ARTIFACT_FILE)
    write_artifact(artifact, artifact_uri, cfg.output.storage_options)
    if artifact.linear is not None:
        log.info(
            "linear observer over %d layer(s) (%d with a non-zero weight), ridge penalty %g chosen by %d-fold "
            "identity-grouped CV (held-out Spearman %.4f); artifact %s (calibration_id %s)",
            len(artifact.linear.layers),
            len(artifact.scoring_layers),
            artifact.linear.penalty,
            artifact.linear.folds,
            artifact.linear.cv[repr(float(artifact.linear.penalty))],
            artifact_uri,
            artifact.calibration_id,
        )
    else:
        log.info(
            "selected %d layer(s): %s (Spearman %.4f with the %s target); artifact %s (calibration_id %s)",
            len(artifact.selected_layers),
            ", ".join(artifact.selected_layers),
            artifact.best_rho,
            c.target,
            artifact_uri,
            artifact.calibration_id,
        )
    calibration = {
        "artifact": artifact_uri,
        "calibration_id": artifact.calibration_id,
        "selected_layers": artifact.selected_layers,
        "best_rho": artifact.best_rho,
        "images_used": images_used,
        "target": c.target,
        "method": artifact.method,
        "scoring_layers": artifact.scoring_layers,
        "settings": artifact.settings,
        "candidate_layers": len(layers),
        "layer_norms_columns": layers,
    }
    return write_scoring_manifest(job, result, {"calibration": calibration})
