"""The Ray Data phases of the throughput benchmark: ``run_annotate`` end to end (files -> read + decode tasks
-> scoring actor -> Parquet shards + manifest), in froq, quality-only and pseudo-label mode.

Ray is started once, before the first timed phase, so no phase pays for cluster start-up; each phase still
pays for its own actor start-up (model load, moving it to the device), as every real job does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import AnnotateJob, config_from_dict
from .monitor import PhaseResources, ResourceMonitor
from .timing import ImagesPerSecond


@dataclass(frozen=True)
class RayResources:
    """Resources of the local Ray cluster (logical CPUs) and of the scoring stage."""

    num_cpus: int
    device: str  # cpu | cuda
    ray_batch_size: int
    model_batch_size: int
    decode_num_cpus: float = 1.0
    actor_num_cpus: float = 1.0  # Ray gives the actor this many torch threads (OMP_NUM_THREADS)

    @classmethod
    def for_machine(cls, cores: int, device: str, ray_batch_size: int, model_batch_size: int) -> RayResources:
        """GPU: one CPU for the actor, the other cores decode. CPU: the actor gets every core as torch
        threads, plus one logical CPU for decode tasks (decoding costs ~1% of CPU scoring)."""
        if device == "cuda":
            return cls(cores, device, ray_batch_size, model_batch_size)
        return cls(cores + 1, device, ray_batch_size, model_batch_size, actor_num_cpus=cores)

    @property
    def decode_slots(self) -> int:
        return max(1, int((self.num_cpus - self.actor_num_cpus) // self.decode_num_cpus))

    def config(self) -> dict[str, Any]:
        return {
            "num_cpus": self.num_cpus,
            "device": self.device,
            "num_gpus_per_actor": 1 if self.device == "cuda" else 0,
            "num_cpus_per_actor": self.actor_num_cpus,
            "decode_num_cpus": self.decode_num_cpus,
            "ray_batch_size": self.ray_batch_size,
            "model_batch_size": self.model_batch_size,
            "actors": 1,
        }


def annotate_config(
    input_dir: Path,
    output_dir: Path,
    model_name: str,
    weights: str | None,
    *,
    artifact: str,
    resources: RayResources,
    mode: str = "froq",
    precision: str = "fp32",
    quality_only: bool = False,
    limit: int | None = None,
) -> AnnotateJob:
    """A validated annotate config for one phase (embeddings written except in quality-only mode)."""
    data: dict[str, Any] = {
        "job": "annotate",
        "input": {"uri": str(input_dir), "identity_from_folder": True, "limit": limit},
        "model": {"name": model_name, "weights": weights},
        "calibration": {"artifact": artifact},
        "scoring": {
            "mode": mode,
            "precision": precision,
            "quality_only": quality_only,
            "write_embedding": not quality_only,
        },
        "resources": resources.config(),
        # one shard = one Ray block from read to write: the benchmark's block size is its shard size
        "output": {
            "uri": str(output_dir),
            "mode": "overwrite",
            "progress_interval_s": 10.0,
            "shard_size": resources.ray_batch_size,
        },
    }
    job = config_from_dict(data, expected_job="annotate")
    assert isinstance(job, AnnotateJob)  # expected_job="annotate" refuses any other job
    return job


@dataclass
class AnnotatePhase(ImagesPerSecond):
    """One measured annotate job; ``seconds`` (and so ``images_per_second``) is end to end: listing, driver-side
    checks, actor start-up, scoring and Parquet writing."""

    name: str
    images: int
    seconds: float
    streaming_images_per_second: float
    resources: PhaseResources
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "images": self.images,
            "wall_seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "streaming_images_per_second": round(self.streaming_images_per_second, 1),
            "counts_by_status": self.manifest["counts_by_status"],
            "scoring": self.manifest["results"]["scoring"],
            **self.resources.to_dict(),
        }


def start_ray(resources: RayResources) -> None:
    from ..config import ResourcesConfig
    from ..engine.runtime import ensure_ray

    ensure_ray(ResourcesConfig(**resources.config()))


def run_phase(name: str, cfg: AnnotateJob) -> AnnotatePhase:
    """Run one annotate job and measure it; every row must come back ``ok``."""
    from ..pipeline.annotate import run_annotate

    with ResourceMonitor() as monitor:
        started = time.perf_counter()
        manifest = run_annotate(cfg, force=True)
        seconds = time.perf_counter() - started
    counts = manifest["counts_by_status"]
    images = manifest["results"]["this_run"]["rows"]
    if counts.get("ok", 0) != images:
        raise RuntimeError(f"phase {name}: not every row was scored: {counts}")
    assert monitor.result is not None
    return AnnotatePhase(
        name,
        images,
        seconds,
        float(manifest["results"]["this_run"]["images_per_second"]),
        monitor.result,
        manifest,
    )
