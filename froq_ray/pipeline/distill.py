"""The distill job: annotations (+ teacher-labelled degraded copies) -> a student trained on Ray Train -> artifact.

Steps (driver unless said otherwise):

1. read the annotation rows (``distill_inputs``): ok rows with a finite target; the rest counted by reason;
2. load the teacher when the target is one it computes and check the annotations came from it;
3. check the output (``output.mode``) against ``_froq/run.json`` (config digest + digest of the rows used);
4. optional self-training (``self_training``; Ray Data: decode -> degrade -> the annotate scoring stage);
5. split by identity (or source image) with a seeded hash -> ``split.parquet`` (path, split_key, side,
   target, source_path, identity) so a leak can be audited; the split is checked to never leak;
6. train on Ray Train (``froq_ray.engine.train``): data from the shared read/decode stage, a checkpoint
   per epoch in ``_train/``; an interrupted run re-run with ``output.mode=resume`` continues from the last one;
7. the student artifact (``weights.safetensors``, ``student.onnx`` checked against PyTorch, ``card.json``
   last) and ``_froq/manifest.json``.

Output folder: the artifact files, ``split.parquet``, ``_froq/`` (``run.json``, ``manifest.json``), ``_train/``
(Ray Train's run folder) and ``self_training/`` (copies: ``_images/``, ``part-*.parquet``, ``_froq/`` with the
markers). Modes:
``resume`` continues (a finished artifact of the same config and data: nothing to do); ``overwrite`` deletes
those (nothing else) first; ``error_if_exists`` refuses a folder holding any of them. ``--force`` resumes
despite a changed config or data: the copies are kept, the training restarts (its checkpoints are deleted).
Images of the self-training copies are read back with ``distill.storage_options``.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .. import status as st
from ..config import DistillJob, config_digest, digest_payload, resolved_dict
from ..distill.artifact import CARD_FILE, ONNX_FILE, WEIGHTS_FILE, save_student_artifact
from ..distill.losses import TargetScaler
from ..distill.students import build_student
from ..engine.dataset import decoded_dataset
from ..engine.runtime import check_requests_fit, ensure_ray, object_store_bytes
from ..engine.stages import DecodeStageConfig
from ..engine.train import TrainedStudent, TrainSettings, fit_student, latest_checkpoint_epoch
from ..models.base import load_state_strict
from ..storage.fs import join_uri, open_fs, read_json, write_bytes_atomic
from ..storage.location import Location
from ..storage.manifest import LEGACY_MANIFEST_FILE, RunManifest, read_manifest, utc_now, write_manifest
from ..storage.output import OutputLayout, open_output
from ..storage.run_state import LEGACY_RUN_FILE, RunState
from ..storage.schema import frame_to_table
from ..storage.shards import STATE_DIR
from ..versions import software_versions
from .distill_inputs import (
    AnnotationRows,
    ColumnChoice,
    DistillInputError,
    Teacher,
    check_teacher,
    load_teacher,
    read_annotation_rows,
    rows_digest,
    split_table,
)
from .self_training import FOLDER as SELF_TRAINING_FOLDER
from .self_training import SelfTrainingResult, run_self_training

log = logging.getLogger("froq_ray")

SPLIT_FILE = "split.parquet"
TRAIN_FOLDER = "_train"
OUTPUTS = (
    CARD_FILE,
    WEIGHTS_FILE,
    ONNX_FILE,
    SPLIT_FILE,
    STATE_DIR,
    TRAIN_FOLDER,
    SELF_TRAINING_FOLDER,
    LEGACY_RUN_FILE,
    LEGACY_MANIFEST_FILE,
)
"""What this job writes in its output folder (the last two: where versions before ``_froq/`` kept them)."""
OUTPUT = OutputLayout("distill", files=tuple(n for n in OUTPUTS if n != STATE_DIR), dataset_inputs=True)
"""The distill job's output layout (``_froq/`` is every job's; its records are handled by ``open_output``)."""
SPLIT_COLUMNS = ("path", "split_key", "side", "target", "source_path", "identity")


# ------------------------------------------------------------------------------------------------ output
def open_distill_output(
    cfg: DistillJob,
    cfg_digest: str,
    data_digest: str,
    force: bool,
    *,
    inputs: tuple[str, ...] = (),
    config: dict[str, Any] | None = None,
) -> RunState:
    """Apply ``output.mode`` to the files this job writes (:func:`~froq_ray.storage.output.open_output` with
    :data:`OUTPUT`; ``_froq/run.json`` records the config digest and the digest of the rows used). ``inputs``:
    the annotation file URIs (the output may not be the folder that holds one); ``config``: the settings
    ``cfg_digest`` covers (recorded, so a refused resume names the keys that changed). A forced resume drops
    the training checkpoints (they belong to another config or data)."""
    out = cfg.output
    state = open_output(
        Location.of(out),
        out.mode,
        OUTPUT,
        config_digest=cfg_digest,
        input_digest=data_digest,
        inputs=inputs,
        force=force,
        config=config,
    )
    train = f"{state.path}/{TRAIN_FOLDER}"
    if state.forced and state.fs.exists(train):
        log.warning("--force with a changed config or data: the training checkpoints are discarded")
        state.fs.rm(train, recursive=True)
    return state


def finished_card(state: RunState) -> dict[str, Any] | None:
    """The card of a finished run of this very config and data in the output (``state.finished``: resume, the
    manifest written after the card is there), else None."""
    path = f"{state.path}/{CARD_FILE}"
    if not state.finished or not state.fs.exists(path):
        return None
    return read_json(state.fs, path)


def write_parquet(fs, path: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    pq.write_table(frame_to_table(frame), buffer)
    write_bytes_atomic(fs, path, buffer.getvalue())


# ------------------------------------------------------------------------------------------------ data
@dataclass
class TrainingData:
    split: pd.DataFrame
    annotations: AnnotationRows
    self_training: SelfTrainingResult | None
    copies: AnnotationRows | None

    @property
    def train(self) -> pd.DataFrame:
        return self.split[self.split["side"] == "train"]

    @property
    def validation(self) -> pd.DataFrame:
        return self.split[self.split["side"] == "validation"]


def gather_training_data(
    cfg: DistillJob, rows: AnnotationRows, teacher: Teacher, force: bool
) -> TrainingData:
    """Annotation rows (+ self-training copies), split and written to ``split.parquet``."""
    table = rows.table
    result = copies = None
    if cfg.self_training.enabled:
        result = run_self_training(cfg, table, teacher, force)
        log.info("self-training rows by status: %s", result.counts)
        if result.copies:
            copies = read_annotation_rows(
                [result.uri], cfg.output.storage_options, ColumnChoice(cfg.distill.target_column)
            )
            check_teacher(copies, teacher, self_training=True)
            table = pd.concat([table, copies.table], ignore_index=True)
    split = split_table(table, cfg)
    fs, root = open_fs(cfg.output.uri, cfg.output.storage_options)
    write_parquet(fs, f"{root}/{SPLIT_FILE}", split.loc[:, list(SPLIT_COLUMNS)])
    data = TrainingData(split, rows, result, copies)
    log.info(
        "split: %d training rows (%d keys), %d validation rows (%d keys); written to %s",
        len(data.train),
        data.train["split_key"].nunique(),
        len(data.validation),
        data.validation["split_key"].nunique(),
        join_uri(cfg.output.uri, SPLIT_FILE),
    )
    if len(data.validation) == 0:
        log.warning(
            "no validation rows (distill.validation_fraction=%s of %d keys): validation metrics are NaN",
            cfg.distill.validation_fraction,
            split["split_key"].nunique(),
        )
    return data


CACHE_SHARE_OF_OBJECT_STORE = 0.25  # training.cache_decoded: auto caches when the crops fit in this share


def decoded_bytes(rows: int, source_size: int) -> int:
    """Object-store bytes of ``rows`` decoded uint8 RGB crops of side ``source_size``."""
    return rows * source_size * source_size * 3


def should_cache_decoded(setting: bool | str, crop_bytes: int, object_store_bytes: float) -> bool:
    """``training.cache_decoded``: an explicit bool wins; ``auto`` caches what fits the share of the store."""
    if isinstance(setting, bool):
        return setting
    return crop_bytes <= CACHE_SHARE_OF_OBJECT_STORE * object_store_bytes


def training_datasets(cfg: DistillJob, data: TrainingData) -> dict[str, Any]:
    """Ray datasets of decoded crops + target: the training rows in a seeded order, validation by path.

    With ``training.cache_decoded`` they are materialised (decoded once, kept in the object store) before the
    trainer starts; otherwise every epoch reads and decodes again, streaming.
    """
    decode = DecodeStageConfig(
        storage_options=dict(cfg.distill.storage_options), num_cpus=cfg.resources.decode_num_cpus
    )
    order = np.random.default_rng(cfg.training.seed).permutation(len(data.train))
    out = {}
    for name, frame in (("train", data.train.iloc[order]), ("validation", data.validation)):
        rows = pd.DataFrame(
            {
                "row": np.arange(len(frame)),
                "path": frame["path"].to_numpy(dtype=object),
                "target": frame["target"].to_numpy(dtype=np.float64),
            }
        )
        out[name] = decoded_dataset(rows, decode, cfg.resources.ray_batch_size, keep=("target",))
    crop_bytes = decoded_bytes(len(data.train) + len(data.validation), decode.crop_size)
    store = object_store_bytes()
    if should_cache_decoded(cfg.training.cache_decoded, crop_bytes, store):
        started = time.perf_counter()
        out = {name: dataset.materialize() for name, dataset in out.items()}
        log.info(
            "decoded %d training + %d validation crops once (%.0f MiB in the object store) in %.1f s",
            len(data.train),
            len(data.validation),
            crop_bytes / 2**20,
            time.perf_counter() - started,
        )
    else:
        log.info(
            "training crops are decoded every epoch (cache_decoded=%s; %.0f MiB decoded, object store "
            "%.0f MiB)",
            cfg.training.cache_decoded,
            crop_bytes / 2**20,
            store / 2**20,
        )
    return out


def train_settings(cfg: DistillJob, n_train: int, scaler: TargetScaler) -> TrainSettings:
    t, s = cfg.training, cfg.student
    per_worker_rows = n_train // t.num_workers
    if per_worker_rows < 2:
        raise DistillInputError(
            f"{n_train} training row(s) for {t.num_workers} worker(s): need at least 2 per worker"
        )
    batch = math.ceil(t.batch_size / t.num_workers)
    return TrainSettings(
        arch=s.arch,
        input_size=s.input_size,
        options=dict(s.options),
        epochs=t.epochs,
        batch_size=batch,
        steps_per_epoch=math.ceil(per_worker_rows / batch),
        lr=t.lr,
        weight_decay=t.weight_decay,
        loss=t.loss.model_dump(),
        seed=t.seed,
        target_mean=scaler.params()[0],
        target_std=scaler.params()[1],
        shuffle_buffer_rows=t.shuffle_buffer_rows,
    )


# ------------------------------------------------------------------------------------------------ card
def student_card(
    cfg: DistillJob,
    cfg_digest: str,
    data: TrainingData,
    teacher: Teacher,
    *,
    teacher_check: dict[str, Any],
    scaler: TargetScaler,
    trained: TrainedStudent,
    settings: TrainSettings,
) -> dict[str, Any]:
    """Everything the artifact's card says beyond the network itself (which ``build_card`` adds)."""
    final = trained.history[-1] if trained.history else {}
    rows = data.annotations
    return {
        "target": {"column": cfg.distill.target_column, "units": "teacher", "scale": scaler.to_dict()},
        "teacher": {**teacher.card(), **teacher_check},
        "data": {
            "annotations": rows.files,
            "annotations_digest": rows_digest(rows.table, ["path", "identity", "target"]),
            "annotation_rows_read": rows.rows_read,
            "annotation_rows_used": len(rows.table),
            "annotation_rows_dropped": rows.dropped,
            "self_training": None
            if data.self_training is None
            else {
                "uri": data.self_training.uri,
                "copies": data.self_training.copies,
                "rows_used": 0 if data.copies is None else len(data.copies.table),
                "counts_by_status": data.self_training.counts,
                **cfg.self_training.model_dump(mode="json"),
            },
            "training_data_digest": rows_digest(data.split, ["path", "split_key", "side", "target"]),
            "train_rows": len(data.train),
            "validation_rows": len(data.validation),
            "split": {
                "file": SPLIT_FILE,
                "identity_source": cfg.distill.identity_source,
                "validation_fraction": cfg.distill.validation_fraction,
                "seed": cfg.distill.split_seed,
                "train_keys": int(data.train["split_key"].nunique()),
                "validation_keys": int(data.validation["split_key"].nunique()),
            },
        },
        "training": {
            **cfg.training.model_dump(mode="json"),
            "batch_size_per_worker": settings.batch_size,
            "steps_per_epoch": settings.steps_per_epoch,
            "steps": trained.step,
            "epochs_completed": trained.epoch + 1,
            "resumed_from_epoch": trained.resumed_from_epoch,
            "optimizer": "AdamW",
            "schedule": "cosine per step to 0",
        },
        "validation": {
            k.removeprefix("validation_"): v for k, v in final.items() if k.startswith("validation_")
        },
        "history": trained.history,
        "config": resolved_dict(cfg),
        "config_digest": cfg_digest,
        "versions": software_versions(),
    }


# ------------------------------------------------------------------------------------------------ job
def run_distill(cfg: DistillJob, force: bool = False) -> dict[str, Any]:
    """Run (or resume) a distillation; returns the run manifest."""
    started_at, clock = utc_now(), time.perf_counter()
    choice = ColumnChoice.of(cfg)
    rows = read_annotation_rows(cfg.distill.annotations, cfg.distill.storage_options, choice)
    seconds = {"read": time.perf_counter() - clock}
    log.info(
        "annotations: %d rows in %d file(s); %d usable (status ok, finite %s); dropped by reason: %s",
        rows.rows_read,
        len(rows.files),
        len(rows.table),
        choice.target,
        rows.dropped or "none",
    )
    if len(rows.table) < 2:
        raise DistillInputError(
            f"only {len(rows.table)} usable row(s) in {', '.join(cfg.distill.annotations)}"
        )
    teacher = load_teacher(cfg)
    teacher_check = check_teacher(rows, teacher, cfg.self_training.enabled)
    student = build_student(
        cfg.student.arch, cfg.student.input_size, cfg.student.options
    )  # bad options fail here
    extra = {
        "weights_sha256": teacher.model.weights_sha256 if teacher.model else None,
        "calibration_id": teacher.calibration_id,
    }
    cfg_digest = config_digest(cfg, extra=extra)
    data_digest = rows_digest(rows.table, ["path", "identity", "target"])
    check_requests_fit(cfg.resources, actors=cfg.self_training.enabled)  # before the output is opened
    state = open_distill_output(
        cfg, cfg_digest, data_digest, force, inputs=tuple(rows.files), config=digest_payload(cfg, extra)
    )
    done = finished_card(state)
    if done is not None:
        log.info(
            "the student in %s is complete (%s): nothing to do (output.mode=overwrite retrains)",
            cfg.output.uri,
            done.get("weights", {}).get("sha256", "")[:12],
        )
        return read_manifest(Location.of(cfg.output))

    ensure_ray(cfg.resources)
    clock = time.perf_counter()
    data = gather_training_data(cfg, rows, teacher, force)
    seconds["data"] = time.perf_counter() - clock  # self-training copies and the split
    scaler = TargetScaler().fit(data.train["target"].to_numpy())
    settings = train_settings(cfg, len(data.train), scaler)
    train_uri = join_uri(cfg.output.uri, TRAIN_FOLDER)
    resumed_from = latest_checkpoint_epoch(train_uri, cfg.output.storage_options)
    if resumed_from is not None:
        log.info("resuming training after epoch %d (checkpoint in %s)", resumed_from, train_uri)
    log.info(
        "training %s@%d on %d rows (%d validation): %d epoch(s) x %d step(s), %d worker(s)%s",
        cfg.student.arch,
        cfg.student.input_size,
        len(data.train),
        len(data.validation),
        settings.epochs,
        settings.steps_per_epoch,
        cfg.training.num_workers,
        " with GPUs" if cfg.training.use_gpu else "",
    )
    clock = time.perf_counter()
    trained = fit_student(
        settings,
        training_datasets(cfg, data),
        train_uri,
        cfg.output.storage_options,
        num_workers=cfg.training.num_workers,
        use_gpu=cfg.training.use_gpu,
        keep_checkpoints=cfg.training.keep_checkpoints,
        resumed_from_epoch=resumed_from,
        cpus_per_worker=cfg.training.cpus_per_worker,
    )
    seconds["train"] = time.perf_counter() - clock
    last = trained.history[-1] if trained.history else {}
    unreadable = int(last.get("train_rows_failed_decode", 0)) + int(
        last.get("validation_rows_failed_decode", 0)
    )
    if unreadable:
        log.warning(
            "%d row(s) could not be read or decoded in the last epoch and were left out of it "
            "(counted in the manifest)",
            unreadable,
        )
    load_state_strict(student, trained.state, f"final checkpoint {trained.checkpoint_path}")
    student.set_target_scale(*scaler.params())
    student.eval()
    clock = time.perf_counter()
    card = save_student_artifact(
        cfg.output.uri,
        student,
        student_card(
            cfg,
            cfg_digest,
            data,
            teacher,
            teacher_check=teacher_check,
            scaler=scaler,
            trained=trained,
            settings=settings,
        ),
        storage_options=cfg.output.storage_options,
    )
    seconds["export"] = time.perf_counter() - clock
    manifest = distill_manifest(
        cfg, cfg_digest, data, card, trained=trained, started_at=started_at, stage_seconds=seconds
    )
    written = write_manifest(Location.of(cfg.output), manifest)
    for line in summary_lines(written):
        log.info(line)
    return written


def distill_manifest(
    cfg: DistillJob,
    cfg_digest: str,
    data: TrainingData,
    card: dict[str, Any],
    *,
    trained: TrainedStudent,
    started_at: str,
    stage_seconds: dict[str, float],
) -> RunManifest:
    """The distill run's manifest: the common header (``counts_by_status``: the annotation rows by status, a
    usable row counted ``ok``) and ``results``: the student, its artifact, the self-training and last-epoch
    read-failure counts, rows, validation metrics and epochs."""
    final = trained.history[-1] if trained.history else {}
    annotations = {st.OK: len(data.annotations.table), **data.annotations.dropped}
    return RunManifest(
        job="distill",
        started_at=started_at,
        config=resolved_dict(cfg),
        config_digest=cfg_digest,
        counts_by_status=dict(sorted(annotations.items())),
        stage_seconds=stage_seconds,
        results={
            "student_id": f"student-{card['arch']}@{card['weights']['sha256'][:12]}",
            "artifact": {
                "uri": cfg.output.uri,
                "files": [CARD_FILE, WEIGHTS_FILE, ONNX_FILE],
                "params": card["params"],
                "flops": card["flops"],
            },
            "counts_by_status": {
                "self_training": data.self_training.counts if data.self_training else {},
                "training_read_failures_last_epoch": {
                    "train": final.get("train_rows_failed_decode", 0),
                    "validation": final.get("validation_rows_failed_decode", 0),
                },
            },
            "rows": {"train": len(data.train), "validation": len(data.validation)},
            "validation": card["validation"],
            "epochs": trained.epoch + 1,
            "resumed_from_epoch": trained.resumed_from_epoch,
        },
    )


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """Log lines summing up a written distill manifest."""
    results = manifest["results"]
    v = results["validation"]
    metrics = ", ".join(
        f"{k}={v[k]:.4g}" for k in ("spearman", "pearson", "mse") if isinstance(v.get(k), float)
    )
    a, r = results["artifact"], results["rows"]
    return [
        f"summary: {results['student_id']} ({a['params']:,} params, {a['flops']:,} FLOPs) written to {a['uri']}",
        (
            f"summary: {r['train']:,} training / {r['validation']:,} validation rows, {results['epochs']} "
            f"epoch(s); validation vs teacher: {metrics or 'n/a'}"
        ),
        f"summary: annotation rows by status: {manifest['counts_by_status']}; {results['counts_by_status']}",
    ]
