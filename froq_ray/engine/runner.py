"""The scoring run shared by calibrate and annotate: pending shards -> Ray Data -> shard files -> summary.

Before any actor starts, the caller has listed the inputs, loaded the model and checked the output
(``prepare_job``); this module then streams the pending shards' rows through decode and scoring and writes
each shard (Parquet, then its completion marker) as soon as its last row arrives.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import __version__
from ..config import AnnotateJob, CalibrateJob, config_digest, digest_payload, resolved_dict
from ..models import LoadedModel
from ..storage.fs import check_reachable
from ..storage.listing import InputListing, input_digest, list_inputs
from ..storage.run_state import RunState, check_writable, prepare_output
from ..storage.schema import schema_metadata, to_table
from ..storage.shards import Shard, plan_shards, write_shard
from .dataset import MapStage, build_dataset, rows_for_shards
from .progress import ProgressReporter, quality_quantiles
from .runtime import ensure_ray
from .stages import DecodeStageConfig, ScoringStageConfig, arrow_to_columns, load_scoring_model
from .writer import ShardAssembler

log = logging.getLogger("froq_ray")

ModelJob = AnnotateJob | CalibrateJob


@dataclass
class PreparedJob:
    """Everything checked on the driver before Ray work starts."""

    cfg: ModelJob
    listing: pd.DataFrame
    model: LoadedModel
    input_digest: str
    config_digest: str
    shards: list[Shard]
    identity_extra: dict[str, Any] = field(default_factory=dict)
    inputs: InputListing | None = None
    """What the listing saw and skipped (None for listings built by a job, e.g. self-training)."""


def load_job_inputs(cfg: ModelJob) -> tuple[InputListing, LoadedModel]:
    """List the inputs and load the model on the driver: a missing input or model file fails here.
    The listing's ``table`` is the (path, identity) DataFrame; skips were logged by ``list_inputs``."""
    check_reachable(cfg.input.uri, cfg.input.storage_options)
    inputs = list_inputs(cfg.input)
    log.info("inputs: %d images from %s (%s)", len(inputs.table), cfg.input.uri, inputs.skipped_line())
    model = load_scoring_model(scoring_stage_config(cfg, cfg.scoring.mode))
    log.info("model: %s (weights sha256 %s)", model.model_id, model.weights_sha256)
    return inputs, model


def digests_and_shards(
    cfg: ModelJob, listing: pd.DataFrame, extra: dict[str, Any]
) -> tuple[str, str, list[Shard]]:
    return (
        input_digest(listing),
        config_digest(cfg, extra=extra),
        plan_shards(len(listing), cfg.output.shard_size),
    )


def shard_digest(listing: pd.DataFrame, shard: Shard) -> str:
    return input_digest(listing.iloc[shard.start : shard.stop])


def open_output(job: PreparedJob, force: bool) -> tuple[RunState, list[Shard]]:
    out = job.cfg.output
    check_writable(out.uri, out.storage_options)
    state = prepare_output(
        out.uri, out.storage_options, out.mode, job.config_digest, job.input_digest, force,
        config=digest_payload(job.cfg, job.identity_extra), listing=job.listing,
    )
    pending = [s for s in job.shards if not state.is_done(s.index, shard_digest(job.listing, s))]
    return state, pending


def scoring_stage_config(
    cfg: ModelJob,
    mode: str,
    artifact_json: str | None = None,
    candidate_layers: tuple[str, ...] | None = None,
) -> ScoringStageConfig:
    r = cfg.resources
    return ScoringStageConfig(
        mode=mode,
        model_name=cfg.model.name,
        model_weights=cfg.model.weights,
        model_options=dict(cfg.model.options),
        artifact_json=artifact_json,
        student_artifact=cfg.scoring.student_artifact,
        storage_options=dict(cfg.input.storage_options),
        device=r.device,
        precision=cfg.scoring.precision,
        quality_only=cfg.scoring.quality_only,
        write_embedding=cfg.scoring.write_embedding,
        model_batch_size=r.model_batch_size,
        perturbation=cfg.scoring.perturbation.model_dump(),
        candidate_layers=candidate_layers,
        num_gpus=r.num_gpus_per_actor,
        num_cpus=r.num_cpus_per_actor,
        actors=r.actors,
    )


@dataclass
class RunResult:
    counts: dict[str, int]
    rows_written: int
    shards_written: int
    seconds: float
    quality: np.ndarray


def run_shards(
    job: PreparedJob,
    state: RunState,
    pending: list[Shard],
    stage: ScoringStageConfig,
    schema: pa.Schema,
    constants: dict[str, str | None],
    calibration_id: str | None,
    decode: DecodeStageConfig | None = None,
    between: Sequence[MapStage] = (),
) -> RunResult:
    """Stream ``pending`` shards through decode and scoring; write each shard when it is complete.

    ``decode`` defaults to reading with ``input.storage_options``; ``between``: CPU stages (e.g. the
    distill job's degradation) applied to the decoded rows before scoring."""
    cfg = job.cfg
    metadata = schema_metadata(job.config_digest, job.model.model_id, calibration_id)
    wanted = [f.name for f in schema]

    def sink(shard: Shard, columns: dict[str, np.ndarray]) -> None:
        n = shard.rows
        cols = {k: columns[k] for k in wanted if k in columns}
        for name, value in constants.items():
            cols[name] = [value] * n
        for f in schema:  # result columns a shard never produced (e.g. every row failed to decode)
            if f.name not in cols:
                cols[f.name] = [None] * n
        table = to_table(cols, schema, metadata)
        write_shard(state.fs, state.path, shard, table, shard_digest(job.listing, shard))

    rows = rows_for_shards(job.listing, pending)
    ensure_ray(cfg.resources)
    if decode is None:
        decode = DecodeStageConfig(
            storage_options=dict(cfg.input.storage_options), num_cpus=cfg.resources.decode_num_cpus
        )
    ds = build_dataset(rows, decode, stage, cfg.resources.ray_batch_size, between)
    assembler = ShardAssembler(pending, sink)
    progress = ProgressReporter(len(rows), cfg.output.progress_interval_s)
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
        batch = arrow_to_columns(table)
        assembler.consume(batch)
        progress.update(batch["status"])
    assembler.finish()
    log.info(progress.line())
    counts: dict[str, int] = {}
    for r in assembler.results:
        for k, v in r.counts.items():
            counts[k] = counts.get(k, 0) + v
    quality = np.concatenate([r.quality for r in assembler.results]) if assembler.results else np.empty(0)
    return RunResult(
        dict(sorted(counts.items())), len(rows), len(assembler.results), progress.elapsed(), quality
    )


def software_versions() -> dict[str, str]:
    import pyarrow
    import ray
    import torch

    return {
        "froq_ray": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "pandas": pd.__version__,
    }


def base_manifest(job: PreparedJob, state: RunState, result: RunResult, total_counts: dict[str, int]) -> dict:
    rate = result.rows_written / result.seconds if result.seconds > 0 else 0.0
    return {
        "job": job.cfg.job,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": resolved_dict(job.cfg),
        "config_digest": job.config_digest,
        "versions": software_versions(),
        "model": {
            **job.model.identity(),
            "model_id": job.model.model_id,
            "weights_path": job.model.weights_path,
        },
        "input": {
            "uri": job.cfg.input.uri,
            "images": len(job.listing),
            "digest": job.input_digest,
            **(job.inputs.summary() if job.inputs is not None else {}),
        },
        "shards": {
            "total": len(job.shards),
            "written_this_run": result.shards_written,
            "resumed_from_earlier_runs": len(job.shards) - result.shards_written,
        },
        "counts_by_status": total_counts,
        "this_run": {
            "rows": result.rows_written,
            "seconds": round(result.seconds, 3),
            "images_per_second": round(rate, 2),
            "counts_by_status": result.counts,
        },
        "resumed": state.resumed,
        "forced": state.forced,
    }


def total_counts(state: RunState, result: RunResult, written: list[Shard]) -> dict[str, int]:
    """Counts over every shard of the output: earlier runs' markers plus this run's shards."""
    counts = dict(result.counts)
    fresh = {s.index for s in written}
    for index, marker in state.markers.items():
        if index not in fresh:
            for k, v in marker.get("counts", {}).items():
                counts[k] = counts.get(k, 0) + int(v)
    return dict(sorted(counts.items()))


def summary_lines(manifest: dict, quality: np.ndarray) -> list[str]:
    run = manifest["this_run"]
    lines = [
        (
            f"summary: {manifest['input']['images']:,} inputs in {manifest['shards']['total']} shard(s); "
            f"this run wrote {run['rows']:,} rows in {manifest['shards']['written_this_run']} shard(s) "
            f"at {run['images_per_second']:,.1f} images/s"
        ),
        "summary: counts by status: "
        + ", ".join(f"{k}={v:,}" for k, v in manifest["counts_by_status"].items()),
    ]
    q = quality_quantiles(np.asarray(quality, dtype=np.float64))
    if q:
        lines.append(
            "summary: quality quantiles (this run): " + ", ".join(f"{k}={v:.4g}" for k, v in q.items())
        )
    return lines
