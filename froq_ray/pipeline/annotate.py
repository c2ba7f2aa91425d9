"""The annotate job: images -> FROQ quality (+ embedding) or pseudo-labels -> Parquet shards + manifest."""

from __future__ import annotations

import logging

from ..config import AnnotateJob
from ..engine.runner import (
    base_manifest,
    load_job_model,
    nothing_to_do,
    prepare_job,
    run_shards,
    scoring_stage_config,
    summary_lines,
    total_counts,
)
from ..engine.stages import scoring_settings
from ..storage.manifest import read_manifest, write_manifest
from ..storage.schema import EMBEDDING, PSEUDO_LABEL_COLUMNS, annotation_schema
from .artifacts import read_artifact

log = logging.getLogger("froq_ray")


def run_annotate(cfg: AnnotateJob, force: bool = False) -> dict:
    """Run (or resume) an annotation; returns the run manifest."""
    model = load_job_model(cfg)
    froq_mode = cfg.scoring.mode == "froq"
    artifact = (
        read_artifact(cfg.calibration.artifact, model, cfg.input.storage_options) if froq_mode else None
    )
    calibration_id = artifact.calibration_id if artifact else None
    extra = {"weights_sha256": model.weights_sha256, "calibration_id": calibration_id}
    job = prepare_job(cfg, model, extra, force)
    if nothing_to_do(job):
        return read_manifest(cfg.output.uri, cfg.output.storage_options)
    if froq_mode:
        dim = model.embedding_size if cfg.scoring.write_embedding else None
        schema = annotation_schema(dim)
        stage = scoring_stage_config(cfg, "froq", artifact_json=artifact.to_json())
    elif cfg.scoring.mode == "student":
        schema = annotation_schema(None)
        stage = scoring_stage_config(cfg, "student")
    else:
        schema = annotation_schema(None, PSEUDO_LABEL_COLUMNS)
        stage = scoring_stage_config(cfg, "pseudo_label")
    log.info(
        "annotating %d of %d shard(s) (%d already complete) with %s; output %s",
        len(job.pending),
        len(job.shards),
        len(job.shards) - len(job.pending),
        model.model_id,
        cfg.output.uri,
    )
    constants = {"model_id": model.model_id, "calibration_id": calibration_id}
    timeout = 600.0 if cfg.scoring.mode in ("froq", "student") else 7200.0
    result = run_shards(job, stage, schema, constants, calibration_id, no_progress_timeout_s=timeout)
    manifest = base_manifest(job, result, total_counts(job, result))
    manifest["calibration_id"] = calibration_id
    manifest["scoring"] = {
        "mode": cfg.scoring.mode,
        "precision": cfg.scoring.precision,
        "quality_only": cfg.scoring.quality_only,
        "columns": [f.name for f in schema],
        "embedding": EMBEDDING in schema.names,
        **scoring_settings(stage),
    }
    write_manifest(cfg.output.uri, cfg.output.storage_options, manifest)
    for line in summary_lines(manifest, result.quality):
        log.info(line)
    log.info("read it with: python -c \"import pandas as pd; df = pd.read_parquet('%s'); "
             "print(df[df.status == 'ok'].sort_values('quality')[['path', 'quality']])\"", cfg.output.uri)
    return manifest
