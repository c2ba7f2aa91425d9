"""A student artifact as the quality model of ``annotate`` (``scoring.mode: student``).

The annotate job treats every scoring network as a :class:`~froq_ray.models.LoadedModel` (identity in the
manifest and the Parquet metadata, weights digest in the resume guard); :func:`student_as_model` gives a
student that record, and :func:`student_quality` is the batch function the scoring actor runs: uint8
ArcFace-aligned crops in, teacher-unit quality out (higher is better, like the teacher's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..imaging.prepare import ModelInputTransform
from ..models.base import LoadedModel
from ..models.inference import map_model_batches
from .artifact import load_student_artifact

FAMILY = "student"


def student_as_model(uri: str, storage_options: dict[str, Any] | None = None) -> LoadedModel:
    """Load (and fully check) a student artifact; its ``model_id`` is ``student-<arch>@<sha12>``."""
    student = load_student_artifact(uri, storage_options)
    return LoadedModel(
        name=f"student-{student.arch}",
        family=FAMILY,
        network=student.network,
        contract=student.contract,
        embedding_size=0,
        weights_path=student.uri or uri,
        weights_sha256=student.weights_sha256,
        options={
            "target_column": student.card.get("target_column"),
            "teacher": student.card.get("teacher"),
            "input_size": student.card.get("input_size"),
        },
    )


def student_quality(model: LoadedModel, device: str, batch_size: int, memory_format: str = "auto"):
    """A callable: uint8 crops (N, H, W, 3) -> ``{"quality": float32 (N,)}`` from the student network."""
    return student_runner(
        model.network, model.input_transform(), device, batch_size, memory_format=memory_format
    )


def student_runner(
    network: torch.nn.Module,
    transform: ModelInputTransform,
    device: str,
    batch_size: int,
    *,
    memory_format: str = "auto",
):
    """:func:`student_quality` for a bare network and its input transform (the cost benchmark's entry).

    ``memory_format`` as for the teacher (``scoring.memory_format``): ``auto`` runs channels_last when a check
    batch gives the same output as NCHW, so students and teacher are timed and served alike.
    """
    from ..quality.accelerate import apply_memory_format, check_batch, resolve_memory_format

    transform = transform.to(device)
    network = network.to(device).eval()
    target = torch.device(device)
    sample = check_batch(transform.contract.size, target)
    fmt = apply_memory_format(network, resolve_memory_format(memory_format), sample)

    def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
        parts = map_model_batches(
            lambda x: network(x).float().cpu().numpy(),
            pixels,
            transform,
            target,
            batch_size=batch_size,
            memory_format=fmt,
        )
        quality = np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)
        return {"quality": quality.astype(np.float32)}

    return run
