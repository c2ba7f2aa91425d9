"""The distillation training loop on Ray Train: ``TorchTrainer`` workers fed by Ray Data, a checkpoint every epoch.

The driver (``froq_ray.pipeline.distill``) builds two Ray datasets from the shared read/decode stage (uint8
112 crops + the target) and calls :func:`fit_student`. Each worker:

* builds the student with ``torch.manual_seed(seed)`` (``prepare_model`` wraps it in DDP when there are
  several workers), AdamW, and a per-step cosine learning rate over the known total number of steps;
* per epoch seeds torch with ``seed + epoch`` and reads its shard of ``train`` with a local shuffle seeded
  the same way, on top of a seeded global row order; Ray Data runs with ``preserve_order`` so the rows a
  worker receives do not depend on timing. Rows whose read or decode failed are counted and left out of the
  batch (the batch count stays fixed, so every worker takes the same number of steps);
* turns crops into student input on its device (:class:`~froq_ray.imaging.prepare.ModelInputTransform` with
  the student's contract: resize 112 -> ``input_size``, normalise), standardises the targets with the
  driver's scaler and minimises :func:`~froq_ray.distill.losses.distill_loss`;
* after each epoch, rank 0 scores the whole ``validation`` dataset in teacher units (Spearman, Pearson, MSE)
  and writes a checkpoint: ``model.safetensors`` (the student's state dict), ``optimizer.safetensors`` +
  ``optimizer.json`` (AdamW's tensors and its JSON param groups) and ``state.json`` (epoch, step, target
  scale, the metrics of every epoch so far). Nothing is pickled.

Resume: Ray Train 2.58 (Train V2) keeps ``checkpoint_manager_snapshot.json`` in ``<storage_path>/<name>``;
a new ``TorchTrainer`` with the same storage path and name loads it and ``ray.train.get_checkpoint()`` returns
the latest checkpoint, from which the loop continues at the next epoch. Because the learning rate is a function
of the step and every epoch's randomness is a function of ``seed + epoch``, a resumed run ends with the same
weights as one that was never interrupted.

This is the only module below ``froq_ray.pipeline`` that imports Ray (inside functions).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import status as st
from ..distill.losses import LossConfig, TargetScaler, distill_loss
from ..distill.students import StudentNetwork, build_student, student_contract
from ..imaging.prepare import ModelInputTransform, network_input
from ..models.base import load_state_strict
from ..quality.calibration import spearman

RUN_NAME = "distill"
MODEL_FILE = "model.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
STATE_FILE = "state.json"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train V2's record of a run's checkpoints
PIXELS = "pixels"
TARGET = "target"


@dataclass(frozen=True)
class TrainSettings:
    """Everything a worker needs (plain JSON-able values: it travels as ``train_loop_config``).

    ``arch``/``input_size``/``options``: the student (:func:`~froq_ray.distill.students.build_student`);
    ``epochs``, ``lr``, ``weight_decay``, ``loss`` (the loss section as a dict), ``seed``; ``target_mean``/
    ``target_std``: the driver's target scaler (teacher units; std > 0); ``shuffle_buffer_rows``: rows in
    the local shuffle buffer; ``source_size``: pixels of the stored crops. Frozen; a worker rebuilds it with
    ``TrainSettings(**config)``, which raises ``TypeError`` for missing or unknown keys."""

    arch: str
    input_size: int
    options: dict[str, Any]
    epochs: int
    batch_size: int
    """Rows per worker batch."""
    steps_per_epoch: int
    """Batches per worker per epoch (every worker receives the same number of rows)."""
    lr: float
    weight_decay: float
    loss: dict[str, Any]
    seed: int
    target_mean: float
    target_std: float
    shuffle_buffer_rows: int = 2048
    source_size: int = 112

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_config(self) -> dict[str, Any]:
        return asdict(self)


def cosine_lr(step: int, total_steps: int, base_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): cosine from ``base_lr`` to 0 over ``total_steps``."""
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Standardised(nn.Module):
    """Calls the student's ``forward_standardised`` through ``forward``, so DDP's gradient hooks run."""

    def __init__(self, student: StudentNetwork) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.forward_standardised(x)


# ------------------------------------------------------------------------------------------------ checkpoints
def save_optimizer(optimizer: torch.optim.Optimizer, folder: str) -> None:
    """AdamW state as safetensors (per-parameter tensors) + JSON (param groups, non-tensor entries)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            key = f"{index}/{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    save_file(tensors, os.path.join(folder, OPTIMIZER_TENSORS))
    with open(os.path.join(folder, OPTIMIZER_JSON), "w") as f:
        json.dump({"param_groups": state["param_groups"], "scalars": scalars}, f)


def load_optimizer(optimizer: torch.optim.Optimizer, folder: str) -> None:
    tensors = load_file(os.path.join(folder, OPTIMIZER_TENSORS))
    with open(os.path.join(folder, OPTIMIZER_JSON)) as f:
        meta = json.load(f)
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    folder: str,
    student: StudentNetwork,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    *,
    step: int,
    history: list[dict[str, Any]],
    scaler: TargetScaler,
) -> None:
    state = {name: t.detach().cpu().contiguous() for name, t in student.state_dict().items()}
    save_file(state, os.path.join(folder, MODEL_FILE))
    save_optimizer(optimizer, folder)
    with open(os.path.join(folder, STATE_FILE), "w") as f:
        json.dump({"epoch": epoch, "step": step, "history": history, "target_scale": scaler.to_dict()}, f)


def read_checkpoint_state(folder: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(student state dict, state.json) of a checkpoint folder."""
    with open(os.path.join(folder, STATE_FILE)) as f:
        meta = json.load(f)
    return load_file(os.path.join(folder, MODEL_FILE)), meta


# ------------------------------------------------------------------------------------------------ worker
def _usable_rows(batch: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(batch["status"], dtype=object) == st.OK


def _inputs(
    batch: dict[str, np.ndarray], rows: np.ndarray, transform: ModelInputTransform, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 student input (n, 3, S, S), float32 targets (n,)) of ``rows``, both on ``device``."""
    target = torch.from_numpy(np.asarray(batch[TARGET][rows], dtype=np.float32)).to(device)
    return network_input(batch[PIXELS][rows], transform, device), target


def _agreed_min(value: int, world_size: int, device: torch.device) -> int:
    """The smallest ``value`` over the workers (every worker must skip the same steps under DDP)."""
    if world_size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _summed(values: dict[str, float], world_size: int, device: torch.device) -> dict[str, float]:
    if world_size == 1:
        return values
    import torch.distributed as dist

    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(names, t.tolist(), strict=True))


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shard,
    settings: TrainSettings,
    *,
    epoch: int,
    step: int,
    scaler: TargetScaler,
    transform: ModelInputTransform,
    device: torch.device,
    world_size: int,
) -> tuple[dict[str, float], int]:
    """One pass over this worker's shard; returns (metrics summed over workers, the next step)."""
    loss_cfg = LossConfig.from_dict(settings.loss)
    model.train()
    sums = {
        "loss_total": 0.0,
        "loss_regression": 0.0,
        "loss_rank": 0.0,
        "rows": 0.0,
        "steps": 0.0,
        "rows_failed_decode": 0.0,
        "rows_in_skipped_steps": 0.0,
    }
    batches = shard.iter_batches(
        batch_size=settings.batch_size,
        batch_format="numpy",
        local_shuffle_buffer_size=settings.shuffle_buffer_rows,
        local_shuffle_seed=settings.seed + epoch,
        drop_last=False,
    )
    for batch in batches:
        usable = _usable_rows(batch)
        sums["rows_failed_decode"] += float((~usable).sum())
        lr = cosine_lr(step, settings.total_steps, settings.lr)
        step += 1
        if _agreed_min(int(usable.sum()), world_size, device) < 2:  # too few rows for BatchNorm and ranking
            sums["rows_in_skipped_steps"] += float(usable.sum())
            continue
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, target = _inputs(batch, np.flatnonzero(usable), transform, device)
        loss, parts = distill_loss(model(x), scaler.transform(target), loss_cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = float(usable.sum())
        for name in ("total", "regression", "rank"):
            sums[f"loss_{name}"] += parts[name] * n
        sums["rows"] += n
        sums["steps"] += 1
    sums = _summed(sums, world_size, device)
    rows = max(sums["rows"], 1.0)
    metrics = {f"train_{k}": sums[k] / rows for k in ("loss_total", "loss_regression", "loss_rank")}
    metrics.update(
        {f"train_{k}": int(sums[k]) for k in ("rows", "rows_failed_decode", "rows_in_skipped_steps")}
    )
    metrics["train_steps_per_worker"] = int(sums["steps"] / world_size)
    return metrics, step


def validation_metrics(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Agreement of the student with the teacher in teacher units (NaN where undefined)."""
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    pearson = float(np.corrcoef(p, t)[0, 1]) if p.size >= 2 and p.std() > 0 and t.std() > 0 else math.nan
    return {
        "validation_spearman": spearman(p, t),
        "validation_pearson": pearson,
        "validation_mse": float(np.mean((p - t) ** 2)) if p.size else math.nan,
        "validation_rows": int(p.size),
    }


def validate(
    student: StudentNetwork, shard, transform: ModelInputTransform, device: torch.device, *, batch_size: int
) -> dict[str, float]:
    student.eval()
    predicted, target, failed = [], [], 0
    with torch.no_grad():
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
            usable = _usable_rows(batch)
            failed += int((~usable).sum())
            if usable.any():
                x, t = _inputs(batch, np.flatnonzero(usable), transform, device)
                predicted.append(student(x).float().cpu().numpy())
                target.append(t.cpu().numpy())
    metrics = validation_metrics(
        np.concatenate(predicted) if predicted else np.empty(0),
        np.concatenate(target) if target else np.empty(0),
    )
    metrics["validation_rows_failed_decode"] = failed
    return metrics


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function (module doc)."""
    import ray.train
    import ray.train.torch

    settings = TrainSettings(**config)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    scaler = TargetScaler(settings.target_mean, settings.target_std)

    torch.manual_seed(settings.seed)
    student = build_student(settings.arch, settings.input_size, settings.options)
    student.set_target_scale(*scaler.params())
    model = ray.train.torch.prepare_model(_Standardised(student))  # DDP when world_size > 1; moves to device
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    start_epoch, step, history = 0, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state, meta = read_checkpoint_state(folder)
            load_state_strict(student, state, "distill checkpoint")
            student.to(device)
            load_optimizer(optimizer, folder)
        start_epoch, step, history = meta["epoch"] + 1, meta["step"], meta["history"]

    transform = ModelInputTransform(student_contract(settings.input_size), settings.source_size).to(device)
    train_shard = ray.train.get_dataset_shard("train")
    validation_shard = ray.train.get_dataset_shard("validation")
    for epoch in range(start_epoch, settings.epochs):
        torch.manual_seed(settings.seed + epoch)
        metrics, step = train_epoch(
            model,
            optimizer,
            train_shard,
            settings,
            epoch=epoch,
            step=step,
            scaler=scaler,
            transform=transform,
            device=device,
            world_size=world_size,
        )
        metrics = {
            "epoch": epoch,
            "step": step,
            "lr_next": cosine_lr(step, settings.total_steps, settings.lr),
            **metrics,
        }
        if rank == 0:
            metrics.update(
                validate(student, validation_shard, transform, device, batch_size=settings.batch_size)
            )
        history = [*history, metrics]
        with tempfile.TemporaryDirectory(prefix="froq-distill-ckpt-") as folder:
            saved = None
            if rank == 0:
                save_checkpoint(folder, student, optimizer, epoch, step=step, history=history, scaler=scaler)
                saved = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=saved)


# ------------------------------------------------------------------------------------------------ driver
@dataclass
class TrainedStudent:
    """What :func:`fit_student` returns: the final student state and the per-epoch metrics.

    ``state``: the student's ``state_dict`` as stored in the final checkpoint (safetensors, CPU tensors;
    weights + the target-scale buffers);
    ``history``: one dict of JSON-able metrics per finished epoch; ``epoch``/``step``: the last finished
    epoch (0-based) and the global step count; ``checkpoint_path``: the checkpoint folder the state was read from;
    ``resumed_from_epoch``: the epoch a resumed run started after, or None. A plain record."""

    state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    epoch: int
    step: int
    checkpoint_path: str
    resumed_from_epoch: int | None


def run_storage(uri: str, storage_options: dict[str, Any] | None) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray Train: a local path as is, a remote URI through fsspec
    (so custom endpoints and credentials in ``storage_options`` apply)."""
    from ..storage.fs import is_local_fs, open_fs

    fs, path = open_fs(uri, storage_options)
    if is_local_fs(fs):
        return path, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return path, PyFileSystem(FSSpecHandler(fs))


def fit_student(
    settings: TrainSettings,
    datasets: dict[str, Any],
    storage_uri: str,
    storage_options: dict[str, Any] | None,
    *,
    num_workers: int,
    use_gpu: bool,
    keep_checkpoints: int | None,
    resumed_from_epoch: int | None = None,
    cpus_per_worker: float = 1.0,
) -> TrainedStudent:
    """Run (or continue, from the snapshot under ``storage_uri``) the Ray Train job; read the final checkpoint."""
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    storage_path, filesystem = run_storage(storage_uri, storage_options)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=settings.to_config(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=RUN_NAME,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True)
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"the training run in {storage_uri} ended without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        state, meta = read_checkpoint_state(folder)
    return TrainedStudent(
        state, meta["history"], meta["epoch"], meta["step"], result.checkpoint.path, resumed_from_epoch
    )


def latest_checkpoint_epoch(storage_uri: str, storage_options: dict[str, Any] | None) -> int | None:
    """The epoch of the checkpoint Ray Train resumes from under ``storage_uri`` (its run snapshot's latest
    checkpoint), or None when there is no snapshot (a fresh start)."""
    from ..storage.fs import join_uri, open_fs

    fs, root = open_fs(join_uri(storage_uri, RUN_NAME, SNAPSHOT_FILE), storage_options)
    fs.invalidate_cache()
    if not fs.exists(root):
        return None
    with fs.open(root, "rb") as f:
        latest = json.loads(f.read()).get("latest_checkpoint_result") or {}
    epoch = (latest.get("metrics") or {}).get("epoch")
    return None if epoch is None else int(epoch)
