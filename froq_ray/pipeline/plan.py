"""Dry run: list and count the inputs, resolve the config, check the model, credentials and the output, and
print the shards, resources and output schema. Starts no Ray and writes nothing but a deleted probe object."""

from __future__ import annotations

import json

from ..config import AnnotateJob, CalibrateJob, config_digest, resolved_dict
from ..engine.runner import load_job_model
from ..storage.fs import open_fs
from ..storage.listing import list_inputs
from ..storage.run_state import check_writable
from ..storage.schema import PSEUDO_LABEL_COLUMNS, annotation_schema
from ..storage.shards import read_markers
from .artifacts import read_artifact


def plan_lines(cfg: AnnotateJob | CalibrateJob) -> list[str]:
    model = load_job_model(cfg)
    inputs = list_inputs(cfg.input)  # a dry run lists on the driver; a run lists in Ray tasks (engine.inputs)
    listing = inputs.table
    artifact = None
    if cfg.job == "annotate" and cfg.scoring.mode == "froq":
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
    if cfg.job == "annotate" and cfg.scoring.mode == "froq":
        schema = annotation_schema(model.embedding_size if cfg.scoring.write_embedding else None)
    else:
        schema = annotation_schema(None, PSEUDO_LABEL_COLUMNS)
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
        f"calibration: {artifact.calibration_id} layers {', '.join(artifact.selected_layers)}"
        if artifact
        else (
            "calibration: written by this job (_froq/calibration.json in the output)"
            if cfg.job == "calibrate"
            else f"calibration: none needed (scoring mode {cfg.scoring.mode})"
        ),
        f"output: {cfg.output.uri} (mode {cfg.output.mode}; writable)",
        (
            f"shards: about {n_shards} of up to {cfg.output.shard_size:,} rows (an s3:// prefix is listed per "
            f"top-level prefix, each cut on its own); {done} completion marker(s) in the output"
        ),
        (
            f"resources: ray {'local (started by the job)' if not r.ray_address else r.ray_address}; "
            f"{r.actors} scoring actor(s) x (num_gpus={r.num_gpus_per_actor:g}, num_cpus={r.num_cpus_per_actor:g}); "
            f"decode tasks num_cpus={r.decode_num_cpus:g}; ray batch {r.ray_batch_size}, model batch "
            f"{r.model_batch_size}; device {r.device}"
        ),
        "output schema: " + ", ".join(f"{f.name}: {f.type}" for f in schema),
        "resolved config: " + json.dumps(resolved_dict(cfg), sort_keys=True),
    ]
    return lines
