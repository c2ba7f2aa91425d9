"""Self-training data for the distill job: degraded copies of the images, labelled by the teacher in the same run.

One Ray Data pipeline, the annotate job's stages with one stage added: the listing (each chosen image
``copies`` times) -> :func:`~froq_ray.engine.stages.read_and_decode` -> :func:`degrade_and_store` (CPU: a
per-copy seeded degradation of the 112 crop, written as a PNG under ``<output>/self_training/_images/``) ->
the annotate :class:`~froq_ray.engine.stages.ScoringStage` (the teacher: FROQ with its calibration, or the
pseudo-label) -> shards ``<output>/self_training/part-*.parquet`` with completion markers, written by the
annotate runner, so an interrupted run resumes shard by shard. Rows: ``path`` (the PNG), ``source_path``,
``identity``, the teacher's target, ``status``, ``error``, ``degradation`` (JSON list of the applied kinds and
their exact parameters, replayable with :func:`froq_ray.imaging.degrade.apply_degradation`).

Which images get copies: a seeded choice of ``fraction`` of the usable rows; copy ``c`` of image ``p`` draws
its degradation from :func:`froq_ray.imaging.degrade.image_rng` of ``(seed, "p#c")``, so a copy does not
depend on the rest of the data, the batch it ran in, or the number of workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from .. import status as st
from ..config import DistillJob
from ..engine.dataset import MapStage
from ..engine.modes import ScoringMode, scoring_mode
from ..engine.runner import RunResult, prepare_table_run, run_shards, total_counts
from ..engine.stages import PIXELS, DecodeStageConfig, ScoringStageConfig
from ..imaging.degrade import degrade, image_rng
from ..storage.fs import join_uri, open_fs, write_bytes_atomic
from ..storage.output import OutputLayout
from .distill_inputs import Teacher

log = logging.getLogger("froq_ray")

FOLDER = "self_training"
IMAGES = "_images"  # "_": like _froq/, skipped by pandas / pyarrow; polars and duckdb glob *.parquet
OUTPUT = OutputLayout("self_training", files=(IMAGES,), shards=True)
"""What the self-training copies own in ``<output>/self_training``: shards, ``_froq/`` records, the PNGs."""


@dataclass(frozen=True)
class DegradeStageConfig:
    images_uri: str
    copies: int
    seed: int
    kinds: tuple[str, ...]
    kinds_per_copy: int = 1
    storage_options: dict[str, Any] = field(default_factory=dict)


def degraded_name(source_path: str, copy: int) -> str:
    """Deterministic relative name of copy ``copy`` of ``source_path`` (two-level fan-out by hash)."""
    digest = hashlib.sha256(source_path.encode()).hexdigest()[:24]
    return f"{digest[:2]}/{digest}_c{copy}.png"


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def degrade_and_store(batch: dict[str, np.ndarray], cfg: DegradeStageConfig) -> dict[str, np.ndarray]:
    """Degrade each decoded crop (copy = row % copies), write it as a PNG, and point the row at it.

    Rows whose read/decode failed keep their status and get the PNG name they would have had (no file).
    """
    fs, root = open_fs(cfg.images_uri, cfg.storage_options)
    pixels = np.array(batch[PIXELS], copy=True)
    status = np.asarray(batch["status"], dtype=object)
    sources = [str(p) for p in batch["path"]]
    rows = np.asarray(batch["row"], dtype=np.int64)
    paths: list[str] = []
    records: list[str | None] = []  # the applied degradations as JSON; None for a row that failed
    for i, (source, row) in enumerate(zip(sources, rows, strict=True)):
        copy = int(row) % cfg.copies
        name = degraded_name(source, copy)
        paths.append(join_uri(cfg.images_uri, name))
        if status[i] != st.OK:
            records.append(None)
            continue
        rng = image_rng(cfg.seed, f"{source}#{copy}")
        pixels[i], applied = degrade(pixels[i], rng, cfg.kinds, cfg.kinds_per_copy)
        write_bytes_atomic(fs, f"{root}/{name}", png_bytes(pixels[i]))
        records.append(json.dumps([{"kind": r.kind, "params": r.params} for r in applied], sort_keys=True))
    out = dict(batch)
    out[PIXELS] = pixels
    out["path"] = np.asarray(paths, dtype=object)
    out["source_path"] = np.asarray(sources, dtype=object)
    out["degradation"] = np.asarray(records, dtype=object)
    return out


def self_training_listing(rows: pd.DataFrame, cfg: DistillJob) -> pd.DataFrame:
    """(path = source image, identity) for each copy, source-major (row ``i * copies + c`` is copy ``c``)."""
    s = cfg.self_training
    n = len(rows)
    chosen = np.sort(np.random.default_rng(s.seed).choice(n, size=round(s.fraction * n), replace=False))
    picked = rows.iloc[chosen]
    return pd.DataFrame(
        {
            "path": np.repeat(picked["path"].to_numpy(dtype=object), s.copies),
            "identity": np.repeat(picked["identity"].to_numpy(dtype=object), s.copies),
        }
    )


def teacher_mode(teacher: Teacher) -> ScoringMode:
    """The scoring mode that recomputes the teacher's target (``teacher.mode``)."""
    return scoring_mode(teacher.scoring()[1])


def self_training_schema(cfg: DistillJob, teacher: Teacher) -> pa.Schema:
    """The teacher mode's output schema (:meth:`~froq_ray.engine.modes.ScoringMode.output_schema` of
    :func:`teacher_stage`: no embedding) + ``source_path`` and ``degradation`` (strings)."""
    schema = teacher_mode(teacher).output_schema(teacher.scoring()[0], teacher_stage(cfg, teacher))
    for name in ("source_path", "degradation"):
        schema = schema.append(pa.field(name, pa.string()))
    return schema


def teacher_stage(cfg: DistillJob, teacher: Teacher) -> ScoringStageConfig:
    """The annotate scoring stage with the teacher: no embedding (the forward pass stops after the deepest
    selected layer where the mode would compute one)."""
    mode = teacher_mode(teacher)
    return ScoringStageConfig.from_job(
        cfg,
        mode.name,
        artifact_json=teacher.artifact.to_json() if teacher.artifact else None,
        quality_only=mode.computes_embedding,
    )


def self_training_digest(cfg: DistillJob, teacher: Teacher) -> str:
    """sha256 (hex) of :func:`self_training_settings`."""
    extra = self_training_settings(cfg, teacher)
    return hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()


def self_training_settings(cfg: DistillJob, teacher: Teacher) -> dict[str, Any]:
    """What the copies and their labels depend on (not the student or training settings), JSON-able."""
    return {
        "self_training": cfg.self_training.model_dump(mode="json"),
        "target_column": cfg.distill.target_column,
        "model": cfg.model.model_dump(mode="json"),
        "weights_sha256": teacher.scoring()[0].weights_sha256,
        "calibration_id": teacher.calibration_id,
        "shard_size": cfg.output.shard_size,
    }


@dataclass
class SelfTrainingResult:
    uri: str
    copies: int
    counts: dict[str, int]
    shards_written: int
    shards_total: int


def run_self_training(
    cfg: DistillJob, rows: pd.DataFrame, teacher: Teacher, force: bool = False
) -> SelfTrainingResult:
    """Write (or finish) ``<output>/self_training``; returns where and what it holds."""
    out, s = cfg.output, cfg.self_training
    model, mode_name = teacher.scoring()
    uri = join_uri(out.uri, FOLDER)
    listing = self_training_listing(rows, cfg)
    digest = self_training_digest(cfg, teacher)
    job = prepare_table_run(
        cfg,
        model,
        uri,
        digest,
        settings=self_training_settings(cfg, teacher),
        table=listing,
        force=force,
        layout=OUTPUT,
    )
    pending = job.pending
    log.info(
        "self-training: %d degraded copies of %d images (%d of %d shard(s) to run), teacher %s (%s)",
        len(listing),
        len(listing) // s.copies,
        len(pending),
        len(job.shards),
        model.model_id,
        mode_name,
    )
    result = RunResult({}, 0, 0, 0.0, np.empty(0))
    if pending:
        degrade_cfg = DegradeStageConfig(
            images_uri=join_uri(uri, IMAGES),
            copies=s.copies,
            seed=s.seed,
            kinds=tuple(s.kinds),
            kinds_per_copy=s.kinds_per_copy,
            storage_options=dict(out.storage_options),
        )
        decode = DecodeStageConfig(
            storage_options=dict(cfg.distill.storage_options), num_cpus=cfg.resources.decode_num_cpus
        )
        result = run_shards(
            job,
            teacher_mode(teacher),
            teacher_stage(cfg, teacher),
            self_training_schema(cfg, teacher),
            calibration_id=teacher.calibration_id,
            decode=decode,
            between=(MapStage(degrade_and_store, degrade_cfg),),
        )
    counts = total_counts(job, result)
    return SelfTrainingResult(uri, len(listing), counts, result.shards_written, len(job.shards))
