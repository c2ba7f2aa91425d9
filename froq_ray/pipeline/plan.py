"""Dry run: list and count the inputs, resolve the config, check the model, credentials and the output, and
print the shards, resources and output schema. Starts no Ray and writes nothing but a deleted probe object."""

from __future__ import annotations

import json

import pyarrow as pa

from ..config import AnnotateJob, CalibrateJob, config_digest, resolved_dict
from ..engine.modes import job_scoring_mode
from ..engine.runner import load_job_model, scoring_stage_config
from ..storage.fs import open_fs
from ..storage.listing import list_inputs
from ..storage.run_state import check_writable
from ..storage.schema import written_schema
from ..storage.shards import read_markers
from .artifacts import read_artifact

SCHEMA_PREFIX = "output schema: "


def schema_text(schema: pa.Schema) -> str:
    """``name: type[ not null]`` per field, in order, joined by ``", "`` (pyarrow's spelling of each type, as
    ``pq.read_schema`` of a written part gives it: :func:`~froq_ray.storage.schema.written_schema`)."""
    return ", ".join(f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in schema)


def plan_lines(cfg: AnnotateJob | CalibrateJob) -> list[str]:
    """The plan of ``cfg`` as text lines; its ``output schema:`` line is exactly the schema the run's Parquet
    parts get (the job's :class:`~froq_ray.engine.modes.ScoringMode` decides both). Raises what the job raises
    before its Ray work (``UserError`` subclasses for inputs, model, calibration, credentials, output)."""
    model = load_job_model(cfg)
    inputs = list_inputs(cfg.input)  # a dry run lists on the driver; a run lists in Ray tasks (engine.inputs)
    listing = inputs.table
    mode = job_scoring_mode(cfg)
    artifact = None
    if mode.needs_calibration:
        artifact = read_artifact(cfg.calibration.artifact, model, cfg.input.storage_options)
    extra = {
        "weights_sha256": model.weights_sha256,
        "calibration_id": artifact.calibration_id if artifact else None,
    }
    cfg_digest = config_digest(cfg, extra=extra)
    check_writable(cfg.output.uri, cfg.output.storage_options)
    fs, path = open_fs(cfg.output.uri, cfg.output.storage_options)
    n_shards = -(-len(listing) // cfg.output.shard_size)
    done = len(read_markers(fs, path)) if fs.exists(path) else 0
    r = cfg.resources
    stage = scoring_stage_config(
        cfg,
        mode.name,
        artifact_json=artifact.to_json() if artifact else None,
        candidate_layers=mode.candidate_layers(model),
    )
    schema = written_schema(mode.output_schema(model, stage))
    identities = listing["identity"].dropna().nunique()
    lines = [
        f"job: {cfg.job} (config digest {cfg_digest[:16]})",
        f"inputs: {len(listing):,} images from {cfg.input.uri} ({identities:,} identities)",
        (
            f"inputs {inputs.skipped_line()}; {inputs.duplicates} duplicate manifest row(s) merged; "
            f"{len(inputs.followed_links)} symlinked folder(s) followed; {inputs.beyond_limit} beyond input.limit"
        ),
        (
            f"model: {model.model_id} (input {model.contract.size}px {model.contract.alignment}, "
            f"{model.embedding_size}-d embedding)"
        ),
        f"calibration: {artifact.calibration_id} ({artifact.method}) layers {', '.join(artifact.scoring_layers)}"
        if artifact
        else (
            "calibration: written by this job (_froq/calibration.json in the output)"
            if cfg.job == "calibrate"
            else f"calibration: none needed (scoring mode {mode.name})"
        ),
        f"output: {cfg.output.uri} (mode {cfg.output.mode}; writable)",
        (
            f"shards: about {n_shards} of up to {cfg.output.shard_size:,} rows (an s3:// prefix is listed per "
            f"top-level prefix, each cut on its own); {done} completion marker(s) in the output"
        ),
        (
            f"resources: ray {'local (started by the job)' if not r.ray_address else r.ray_address}; "
            f"{'..'.join(map(str, sorted(set(r.actor_range))))} scoring actor(s) x "
            f"(num_gpus={r.num_gpus_per_actor:g}, num_cpus={r.num_cpus_per_actor:g}); "
            f"headroom_cpus={r.headroom_cpus:g}; no_progress_timeout_s="
            f"{r.no_progress_timeout_s or mode.default_no_progress_timeout_s:g}; "
            f"decode tasks num_cpus={r.decode_num_cpus:g}; ray batch {r.ray_batch_size}, model batch "
            f"{r.model_batch_size}; device {r.device}"
        ),
        SCHEMA_PREFIX + schema_text(schema),
        f"output quality: {mode.score_kind} (Parquet metadata froq_ray.score_kind)",
        "resolved config: " + json.dumps(resolved_dict(cfg), sort_keys=True),
    ]
    return lines
