"""Throughput benchmark: the FROQ reference loop vs the froq_ray annotate path, measured in one run.

Phases, in this order (the reference loop runs before Ray starts, so its memory peak excludes Ray):

1. write N JPEG crops (:mod:`froq_ray.bench.crops`); load the model (seeded random weights when it needs a
   weights file and none is given); get a calibration artifact (``--artifact``, the built-in one for a
   model that ships one, else a quick throwaway calibration on a few crops);
2. decode: read + decode rate of this process (one core);
3. (a) the reference-style loop (:mod:`froq_ray.bench.reference_loop`), fp32, batch 64, for each loader
   worker count;
4. the scoring path without Ray: decoded crops in memory -> ``FroqScorer`` in speed variants (precision,
   memory format, quality-only, torch.compile), with the Spearman of each variant's scores vs fp32;
5. (b) ``run_annotate`` end to end through Ray Data into Parquet; (d) the same in quality-only mode;
   (c) pseudo-label mode on the first ``pl_n`` images.

Rates are images per second of wall time. For (b)-(d) the wall time covers the whole ``run_annotate`` call
(listing, checks, actor start-up, scoring, Parquet) with Ray already running; the manifest's streaming rate
(first batch requested -> last row written) is reported beside it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import LoadedModel, load_model
from ..quality.artifact import CalibrationArtifact
from .crops import CropSet, write_crops
from .monitor import ResourceMonitor
from .randomweights import needs_weights, random_weights_file
from .ray_phases import AnnotatePhase, RayResources, annotate_config, run_phase, start_ray
from .reference_loop import REFERENCE_BATCH_SIZE, LoopResult, run_reference_loop
from .scoring import (
    VariantResult,
    decode_files,
    default_variants,
    quick_artifact,
    rank_agreement,
    time_variant,
)

log = logging.getLogger("froq_ray.bench")

QUICK_CALIBRATION_IMAGES = 16
PHASES = ("reference", "scorer", "annotate", "quality_only", "pseudo_label")


@dataclass
class BenchSettings:
    arch: str = "adaface_ir101"
    n: int = 2000
    weights: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (bf16 on CUDA, fp32 on CPU): the froq_ray path
    reference_workers: list[int] | None = None  # default [0, all cores]
    ray_batch_size: int | None = None  # default: about 4 blocks per decode slot, 64..1024 rows
    model_batch_size: int | None = None  # default 512 on CUDA, 64 on CPU
    pl_n: int | None = None  # pseudo-label images; default n // 8, 16..4096
    artifact: str | None = None
    source_dir: str | None = None
    seed: int = 0
    compile: bool = False
    bf16_on_cpu: bool = False  # bf16 scorer variants (and their Spearman) on a CPU run
    skip: tuple[str, ...] = ()
    work_dir: str | None = None
    keep: bool = False
    num_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def resolved_precision(self) -> str:
        if self.precision == "auto":
            return "bf16" if self.resolved_device() == "cuda" else "fp32"
        return self.precision


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda
        )
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------------ set-up
def prepare_model(s: BenchSettings, work: Path) -> tuple[LoadedModel, str | None]:
    weights = s.weights
    if weights is None and needs_weights(s.arch):
        weights = str(random_weights_file(s.arch, work / "weights", seed=s.seed))
        log.info("random weights for %s: %s", s.arch, weights)
    return load_model(s.arch, weights), weights


def prepare_artifact(
    s: BenchSettings, model: LoadedModel, crops: np.ndarray, work: Path, *, device: str
) -> tuple[CalibrationArtifact, str, str]:
    """(artifact, the path annotate reads, where it came from)."""
    from ..pipeline.artifacts import builtin_artifact_path, read_artifact

    if s.artifact:
        return read_artifact(s.artifact, model), s.artifact, s.artifact
    builtin = builtin_artifact_path(model.name)
    if s.weights is None and not needs_weights(s.arch) and builtin.is_file():
        return read_artifact("builtin", model), "builtin", str(builtin)
    started = time.perf_counter()
    artifact = quick_artifact(model, crops[:QUICK_CALIBRATION_IMAGES], device)
    path = artifact.save(work / "calibration.json")
    log.info(
        "quick calibration in %.1f s: layers %s", time.perf_counter() - started, artifact.selected_layers
    )
    return artifact, str(path), f"quick calibration on {QUICK_CALIBRATION_IMAGES} crops (timing only)"


def default_ray_batch_size(n: int, decode_slots: int) -> int:
    """About four input blocks per decode slot, so decode tasks run in parallel; 64..1024 rows."""
    return int(min(1024, max(64, n // max(1, 4 * decode_slots))))


# ---------------------------------------------------------------------------------------------- phases
def run_reference_phases(
    s: BenchSettings, crop_set: CropSet, model: LoadedModel, layers: list[str], *, device: str
) -> list[dict[str, Any]]:
    rows = []
    for workers in s.reference_workers or [0, s.num_cpus]:
        run_reference_loop(
            crop_set.paths[:REFERENCE_BATCH_SIZE], model.network, model.contract, layers, device=device
        )
        with ResourceMonitor() as monitor:
            result: LoopResult = run_reference_loop(
                crop_set.paths, model.network, model.contract, layers, device=device, num_workers=workers
            )
        assert monitor.result is not None
        rows.append(
            {
                "phase": f"reference_workers{workers}",
                "num_workers": workers,
                "images": result.images,
                "seconds": round(result.seconds, 3),
                "images_per_second": round(result.images_per_second, 1),
                **monitor.result.to_dict(),
            }
        )
        log.info("reference loop, %d workers: %.1f images/s", workers, result.images_per_second)
    return rows


def run_scorer_phases(
    s: BenchSettings,
    model: LoadedModel,
    artifact: CalibrationArtifact,
    crops: np.ndarray,
    *,
    device: str,
    model_batch_size: int,
) -> tuple[list[VariantResult], dict[str, float]]:
    with_bf16 = device == "cuda" or s.bf16_on_cpu
    results = []
    for variant in default_variants(device, with_bf16, s.compile):
        result = time_variant(
            model, artifact, crops, variant, device=device, model_batch_size=model_batch_size
        )
        log.info("scorer %s: %.1f images/s", variant.name, result.images_per_second)
        results.append(result)
    return results, rank_agreement(results)


def run_ray_phases(
    s: BenchSettings,
    crop_set: CropSet,
    weights: str | None,
    artifact_path: str,
    *,
    resources: RayResources,
    work: Path,
) -> list[AnnotatePhase]:
    if all(p in s.skip for p in ("annotate", "quality_only", "pseudo_label")):
        return []
    start_ray(resources)
    precision = s.resolved_precision()
    phases = []
    common: dict[str, Any] = {
        "model_name": s.arch,
        "weights": weights,
        "artifact": artifact_path,
        "resources": resources,
    }
    if "annotate" not in s.skip:
        cfg = annotate_config(crop_set.root, work / "out-froq", precision=precision, **common)
        phases.append(run_phase("annotate", cfg))
    if "quality_only" not in s.skip:
        cfg = annotate_config(
            crop_set.root, work / "out-quality-only", precision=precision, quality_only=True, **common
        )
        phases.append(run_phase("quality_only", cfg))
    if "pseudo_label" not in s.skip:
        pl_n = s.pl_n or int(min(4096, max(16, s.n // 8)))
        cfg = annotate_config(
            crop_set.root,
            work / "out-pseudo-label",
            mode="pseudo_label",
            precision=precision,
            limit=pl_n,
            **common,
        )
        phases.append(run_phase("pseudo_label", cfg))
    for phase in phases:
        log.info("ray %s: %.1f images/s end to end", phase.name, phase.images_per_second)
    return phases


# ---------------------------------------------------------------------------------------------- summary
def headline(
    reference: list[dict[str, Any]], phases: list[AnnotatePhase], scorer: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """The ratios the issue asks for, all from this run: end-to-end annotate vs each reference loop and vs the
    in-process scorer variant that runs what a CPU actor runs (the frozen graph; end to end and, from the shard
    commit times, after the first shard), and quality-only vs annotate."""
    by_name = {p.name: p for p in phases}
    out: dict[str, Any] = {}
    annotate = by_name.get("annotate")
    if annotate:
        for r in reference:
            ratio = annotate.images_per_second / r["images_per_second"]
            out[f"ratio_annotate_vs_reference_{r['num_workers']}_workers"] = round(ratio, 3)
    frozen = [v for v in scorer if v.get("graph_used") == "frozen" and "quality_only" not in v["variant"]]
    if annotate and frozen:  # the in-process scorer running what a CPU actor runs (scoring.graph: auto)
        rate = frozen[0]["images_per_second"]
        out["ratio_annotate_vs_scorer"] = round(annotate.images_per_second / rate, 3)
        steady = annotate.commits.steady_images_per_second if annotate.commits else None
        if steady is not None:
            out["ratio_annotate_steady_vs_scorer"] = round(steady / rate, 3)
    quality_only = by_name.get("quality_only")
    if annotate and quality_only:
        out["quality_only_gain_end_to_end"] = round(
            quality_only.images_per_second / annotate.images_per_second, 3
        )
    return out


def table(result: dict[str, Any]) -> str:
    """One table: every timed phase with its rate, GPU utilisation and memory peaks."""
    header = f"{'phase':<60} {'images':>7} {'images/s':>10} {'GPU util %':>11} {'host RSS MiB':>13} {'device MiB':>11}"
    lines = [header, "-" * len(header)]

    def row(name: str, images: int, rate: float, r: dict[str, Any]) -> None:
        util = "n/a" if r.get("gpu_util_mean") is None else f"{r['gpu_util_mean']:.0f}"
        device_mib = r.get("peak_torch_allocated_mib") or r.get("peak_gpu_memory_used_mib")
        rss = r.get("peak_host_rss_mib")
        lines.append(
            f"{name:<60} {images:>7} {rate:>10.1f} {util:>11} {('n/a' if rss is None else f'{rss:.0f}'):>13} "
            f"{('n/a' if device_mib is None else f'{device_mib:.0f}'):>11}"
        )

    lines.append(
        f"{'decode (read + PIL decode, 1 core)':<60} {result['decode']['images']:>7} "
        f"{result['decode']['images_per_second']:>10.1f}"
    )
    for r in result["reference"]:
        row(f"(a) reference loop, {r['num_workers']} workers, fp32", r["images"], r["images_per_second"], r)
    for r in result["scorer"]:
        row(f"scorer only (no Ray) {r['variant']}", r["images"], r["images_per_second"], r)
    labels = {
        "annotate": "(b) Ray annotate -> Parquet",
        "quality_only": "(d) Ray quality-only -> Parquet",
        "pseudo_label": "(c) Ray pseudo-label -> Parquet",
    }
    for p in result["ray"]:
        row(f"{labels[p['phase']]}, {p['scoring']['precision']}", p["images"], p["images_per_second"], p)
        if p.get("cpu_s_scoring_actors") is not None:
            lines.append(
                f"    CPU s: scoring actor {p['cpu_s_scoring_actors']:.1f}, driver {p['cpu_s_driver']:.1f}, "
                f"other processes {p['cpu_s_other_processes']:.1f}, unused {p['cpu_s_unused']:.1f}"
            )
        if p.get("shards_committed") == 1:
            lines.append(
                "    one shard: no rate after the first shard (a smaller --ray-batch-size gives more)"
            )
        if p.get("steady_images_per_second") is not None:
            lines.append(
                f"{'    after the first shard (committed at ' + format(p['first_shard_seconds'], '.1f') + ' s)':<60}"
                f" {'':>7} {p['steady_images_per_second']:>10.1f}"
            )
    for key, value in result["headline"].items():
        lines.append(f"{key}: {value}")
    for name, rho in result["spearman_vs_fp32"].items():
        lines.append(f"Spearman(scores {name}, fp32): {rho:.5f}")
    return "\n".join(lines)


def release_device_memory(model: LoadedModel) -> None:
    """Give this process's GPU memory back before the Ray actor (another process) loads its own model."""
    if torch.cuda.is_available():
        model.network.to("cpu")
        torch.cuda.empty_cache()


def run_benchmark(s: BenchSettings) -> dict[str, Any]:
    unknown = sorted(set(s.skip) - set(PHASES))
    if unknown:
        raise ValueError(f"unknown phase(s) to skip {unknown}; known: {list(PHASES)}")
    device = s.resolved_device()
    model_batch_size = s.model_batch_size or (512 if device == "cuda" else 64)
    resources = RayResources.for_machine(s.num_cpus, device, s.ray_batch_size or 0, model_batch_size)
    if not s.ray_batch_size:
        resources = replace(resources, ray_batch_size=default_ray_batch_size(s.n, resources.decode_slots))
    work = Path(s.work_dir) if s.work_dir else Path(tempfile.mkdtemp(prefix="froq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "settings": {**asdict(s), "device": device, "precision": s.resolved_precision()},
        "hardware": hardware(),
        "ray_resources": resources.config(),
    }
    try:
        started = time.perf_counter()
        crop_set = write_crops(work / "crops", s.n, s.seed, s.source_dir, workers=s.num_cpus)
        result["crops"] = {**crop_set.summary(), "write_seconds": round(time.perf_counter() - started, 2)}
        model, weights = prepare_model(s, work)
        crops, decode = decode_files(crop_set.paths, 112)
        result["decode"] = {
            "images": decode.images,
            "seconds": round(decode.seconds, 3),
            "images_per_second": round(decode.images_per_second, 1),
        }
        artifact, artifact_path, artifact_source = prepare_artifact(s, model, crops, work, device=device)
        result["model"] = {"model_id": model.model_id, "weights": weights or "built-in"}
        result["calibration"] = {"source": artifact_source, "selected_layers": artifact.selected_layers}
        reference = (
            []
            if "reference" in s.skip
            else run_reference_phases(s, crop_set, model, artifact.selected_layers, device=device)
        )
        result["reference"] = reference
        scorer, agreement = (
            ([], {})
            if "scorer" in s.skip
            else run_scorer_phases(
                s, model, artifact, crops, device=device, model_batch_size=model_batch_size
            )
        )
        result["scorer"] = [r.to_dict() for r in scorer]
        result["spearman_vs_fp32"] = {k: round(v, 6) for k, v in agreement.items()}
        release_device_memory(model)
        phases = run_ray_phases(s, crop_set, weights, artifact_path, resources=resources, work=work)
        result["ray"] = [p.to_dict() for p in phases]
        result["headline"] = headline(reference, phases, result["scorer"])
        result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    finally:
        if not s.keep and not s.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return result


def write_result(result: dict[str, Any], path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
