"""The Ray Data phases of the throughput benchmark: ``run_annotate`` end to end (files -> read + decode tasks
-> scoring actor -> Parquet shards + manifest), in froq, quality-only and pseudo-label mode.

Ray is started once, before the first timed phase, so no phase pays for cluster start-up; each phase still
pays for its own actor start-up (model load, moving it to the device), as every real job does.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import AnnotateJob, config_from_dict
from ..storage.shards import MARKER_RE, STATE_DIR
from .monitor import PhaseResources, ResourceMonitor
from .proctree import tree_cpu_seconds
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


@dataclass(frozen=True)
class ShardCommits:
    """When a run's shards were committed, from its markers' modification times (local output): splits the
    wall time into a fixed part (start -> first shard written: listing, Ray Data start, actor start-up, the
    first shard's read + score + write) and the rate after it.

    ``first_shard_seconds``: seconds from the phase start to the first marker; ``steady_images_per_second``:
    rows of the shards after the first / seconds between the first and the last marker (None with one shard);
    ``shards``: markers read."""

    first_shard_seconds: float
    steady_images_per_second: float | None
    shards: int

    @classmethod
    def of(cls, output: Path, started_at: float) -> ShardCommits | None:
        """From the markers in ``output``/_froq (``started_at``: ``time.time()`` at the phase start); None
        without markers."""
        state = output / STATE_DIR
        stamps = []
        for marker in state.iterdir() if state.is_dir() else ():
            if MARKER_RE.match(marker.name):
                rows = json.loads(marker.read_text())["rows"]
                stamps.append((marker.stat().st_mtime, rows))
        if not stamps:
            return None
        stamps.sort()
        span = stamps[-1][0] - stamps[0][0]
        later_rows = sum(rows for _, rows in stamps[1:])
        steady = later_rows / span if len(stamps) > 1 and span > 0 else None
        return cls(stamps[0][0] - started_at, steady, len(stamps))

    def to_dict(self) -> dict[str, Any]:
        steady = self.steady_images_per_second
        return {
            "first_shard_seconds": round(self.first_shard_seconds, 3),
            "steady_images_per_second": None if steady is None else round(steady, 1),
            "shards_committed": self.shards,
        }


@dataclass(frozen=True)
class CpuSeconds:
    """CPU seconds the job's process tree spent in one phase (:func:`~froq_ray.bench.proctree.tree_cpu_seconds`
    of this process before and after): ``scoring_actors`` (Ray processes running the scoring stage, start-up
    included), ``driver`` (this process: planning, Ray Data's scheduler, commits) and ``other`` (read/decode and
    write tasks, Ray Data's helper actors, raylet, GCS, agents); ``available``: wall seconds x cores."""

    scoring_actors: float
    driver: float
    other: float
    available: float

    @classmethod
    def between(
        cls, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall: float
    ) -> CpuSeconds:
        spent = {"scoring_actors": 0.0, "driver": 0.0, "other": 0.0}
        for pid, (command, seconds) in after.items():
            used = seconds - before.get(pid, ("", 0.0))[1]
            key = (
                "driver" if pid == os.getpid() else "scoring_actors" if "ScoringStage" in command else "other"
            )
            spent[key] += used
        return cls(**spent, available=wall * (os.cpu_count() or 1))

    def to_dict(self) -> dict[str, float]:
        used = self.scoring_actors + self.driver + self.other
        return {
            "cpu_s_scoring_actors": round(self.scoring_actors, 2),
            "cpu_s_driver": round(self.driver, 2),
            "cpu_s_other_processes": round(self.other, 2),
            "cpu_s_unused": round(max(self.available - used, 0.0), 2),
        }


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
    commits: ShardCommits | None = None
    cpu: CpuSeconds | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "images": self.images,
            "wall_seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "streaming_images_per_second": round(self.streaming_images_per_second, 1),
            **(self.commits.to_dict() if self.commits else {}),
            **(self.cpu.to_dict() if self.cpu else {}),
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
        cpu_before = tree_cpu_seconds(os.getpid())
        started, started_at = time.perf_counter(), time.time()
        manifest = run_annotate(cfg, force=True)
        seconds = time.perf_counter() - started
        cpu = CpuSeconds.between(cpu_before, tree_cpu_seconds(os.getpid()), seconds)
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
        ShardCommits.of(Path(cfg.output.uri), started_at),
        cpu,
    )
