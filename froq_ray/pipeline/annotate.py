"""The annotate job: images -> FROQ quality (+ embedding) or pseudo-labels -> Parquet shards + manifest."""

from __future__ import annotations

import logging

from ..config import AnnotateJob
from ..engine.modes import job_scoring_mode
from ..engine.runner import (
    PreparedJob,
    base_manifest,
    digests_and_shards,
    load_job_inputs,
    open_output,
    run_shards,
    scoring_stage_config,
    summary_lines,
    total_counts,
)
from ..engine.stages import scoring_settings
from ..storage.manifest import read_manifest, write_manifest
from ..storage.schema import EMBEDDING
from .artifacts import read_artifact

log = logging.getLogger("froq_ray")


def run_annotate(cfg: AnnotateJob, force: bool = False) -> dict:
    """Run (or resume) an annotation; returns the run manifest."""
    inputs, model = load_job_inputs(cfg)
    listing = inputs.table
    mode = job_scoring_mode(cfg)
    artifact = (
        read_artifact(cfg.calibration.artifact, model, cfg.input.storage_options)
        if mode.needs_calibration
        else None
    )
    calibration_id = artifact.calibration_id if artifact else None
    extra = {"weights_sha256": model.weights_sha256, "calibration_id": calibration_id}
    in_digest, cfg_digest, shards = digests_and_shards(cfg, listing, extra)
    job = PreparedJob(cfg, listing, model, in_digest, cfg_digest, shards, extra, inputs)
    state, pending = open_output(job, force)
    if not pending:
        log.info(
            "all %d shard(s) in %s are complete: nothing to do (output.mode=overwrite recomputes)",
            len(shards),
            cfg.output.uri,
        )
        return read_manifest(cfg.output.uri, cfg.output.storage_options)
    stage = scoring_stage_config(cfg, mode.name, artifact_json=artifact.to_json() if artifact else None)
    schema = mode.output_schema(model, stage)
    log.info(
        "annotating %d of %d shard(s) (%d already complete) with %s; output %s",
        len(pending),
        len(shards),
        len(shards) - len(pending),
        model.model_id,
        cfg.output.uri,
    )
    constants = mode.constants(model, calibration_id)
    result = run_shards(job, state, pending, stage, schema, constants, calibration_id)
    manifest = base_manifest(job, state, result, total_counts(state, result, pending))
    manifest["calibration_id"] = calibration_id
    manifest["scoring"] = {
        "mode": mode.name,
        "score_kind": mode.score_kind,
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
