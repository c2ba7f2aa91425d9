"""Dry run: resolve the config, check the model, credentials and the output, say what the run would do (new,
resume, refused: decided by the run's own functions, :func:`froq_ray.engine.runner.plan_run`), count the inputs
and print the shards, resources and output schema.

The counts come from the output's stored listing (``_froq/inputs/plan.json``) when the run would resume from
it (no Ray, nothing listed); otherwise the input is listed by the run's Ray listing tasks, which return only
counts and digests (the driver never holds the listing). Writes nothing but a deleted probe object."""

from __future__ import annotations

import json

import pyarrow as pa

from ..config import AnnotateJob, CalibrateJob, config_digest, resolved_dict
from ..engine.inputs import PLAN_FILE, InputsPlan
from ..engine.modes import job_scoring_mode
from ..engine.runner import load_job_model, plan_run, scoring_stage_config
from ..storage.listing import ListingCounts
from ..storage.schema import written_schema
from . import annotate, calibrate
from .artifacts import read_artifact

SCHEMA_PREFIX = "output schema: "


def schema_text(schema: pa.Schema) -> str:
    """``name: type[ not null]`` per field, in order, joined by ``", "`` (pyarrow's spelling of each type, as
    ``pq.read_schema`` of a written part gives it: :func:`~froq_ray.storage.schema.written_schema`)."""
    return ", ".join(f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in schema)


def _counts(inputs: InputsPlan) -> ListingCounts:
    """The listing counts a plan's summary holds (``followed_links`` as a count)."""
    s = inputs.summary
    return ListingCounts(
        s["source"],
        s["files_seen"],
        s["skipped"]["by_reason"],
        [],
        s["duplicates"],
        s["beyond_limit"],
        s.get("no_identity", 0),  # plans stored before the count have none
    )


def _identities(cfg: AnnotateJob | CalibrateJob) -> str:
    source = cfg.input.identity_source
    if source == "folder":
        return "identities from the parent folder names"
    if source == "column":
        return f"identities from manifest column {cfg.input.identity_column!r}"
    return "no identities"


def plan_lines(cfg: AnnotateJob | CalibrateJob, force: bool = False) -> list[str]:
    """The plan of ``cfg`` (run with ``--force`` when ``force``) as text lines; its ``output schema:`` line is
    exactly the schema the run's Parquet parts get (the job's :class:`~froq_ray.engine.modes.ScoringMode`
    decides both), its ``output:`` line what the run would do (``refused: <the run's reason>`` included). Raises
    what the job raises before it decides on the output (``UserError`` subclasses for inputs, model,
    calibration, credentials)."""
    model = load_job_model(cfg)
    mode = job_scoring_mode(cfg)
    artifact = None
    if mode.needs_calibration:
        artifact = read_artifact(cfg.calibration.artifact, model, cfg.input.storage_options)
    stage = scoring_stage_config(
        cfg,
        mode.name,
        artifact_json=artifact.to_json() if artifact else None,
        candidate_layers=mode.candidate_layers(model),
    )
    # the digest and output layout the job itself uses, so the plan decides what the run decides
    extra: dict[str, str | None]
    if cfg.job == "calibrate":
        extra, layout = dict(calibrate.digest_extra(model, stage.candidate_layers)), calibrate.OUTPUT
    else:
        extra = annotate.digest_extra(model, artifact.calibration_id if artifact else None)
        layout = annotate.OUTPUT
    cfg_digest = config_digest(cfg, extra=extra)
    planned = plan_run(cfg, model, extra, layout, force=force)
    inputs, counts = planned.inputs, _counts(planned.inputs)
    source = (
        f"from the stored listing of the run being resumed ({PLAN_FILE} in the output; not listed again)"
        if inputs.reused
        else "listed by Ray tasks that return only counts; nothing written"
    )
    refusal_details = str(planned.refusal).splitlines()[1:] if planned.refusal else []
    r = cfg.resources
    schema = written_schema(mode.output_schema(model, stage))
    lines = [
        f"job: {cfg.job} (config digest {cfg_digest[:16]})",
        f"inputs: {inputs.total_rows:,} images from {cfg.input.uri} ({_identities(cfg)}; {source})",
        (
            f"inputs {counts.skipped_line()}; {counts.duplicates} duplicate manifest row(s) merged; "
            f"{inputs.summary['followed_links']} symlinked folder(s) followed; {counts.beyond_limit} beyond "
            "input.limit"
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
        f"output: {cfg.output.uri} (mode {cfg.output.mode}): {planned.decision()}",
        *refusal_details,
        (
            f"shards: {planned.shards} of up to {cfg.output.shard_size:,} rows (each input part is cut on its "
            f"own: an s3:// prefix is listed per top-level prefix)"
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
