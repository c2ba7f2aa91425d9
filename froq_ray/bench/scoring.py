"""In-process phases of the throughput benchmark: decode rate, a quick calibration, and the scoring path
without Ray (decoded uint8 crops already in memory -> :class:`FroqScorer`), in several speed variants.

Every timed call is preceded by an untimed warm-up on one model batch (CUDA context, cuDNN plans, compiled
graphs), and CUDA is synchronised before the clock stops.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..imaging.decode import decode_batch
from ..models.base import LoadedModel
from ..quality.artifact import CalibrationArtifact
from ..quality.calibration import calibrate, spearman
from ..quality.perturbations import PerturbationSettings
from ..quality.scorer import FroqScorer
from .timing import ImagesPerSecond, synchronize

# Cheap pseudo-labels for a throwaway speed calibration: the flip component only (2 forwards per image).
QUICK_PERTURBATIONS = PerturbationSettings(noise_masks=0, occlusion_cell=0, max_forward_batch=64)


@dataclass(frozen=True)
class DecodeRate(ImagesPerSecond):
    images: int
    seconds: float


def decode_files(paths: Sequence[Path], size: int = 112) -> tuple[np.ndarray, DecodeRate]:
    """Read and decode ``paths`` in this process (one core): the crops and the rate (read + decode)."""
    started = time.perf_counter()
    blobs = [Path(p).read_bytes() for p in paths]
    batch = decode_batch(blobs, size)
    seconds = time.perf_counter() - started
    if not batch.ok_mask.all():
        raise ValueError(f"{int((~batch.ok_mask).sum())} benchmark crops failed to decode")
    return batch.pixels, DecodeRate(len(paths), seconds)


def quick_artifact(
    model: LoadedModel, crops: np.ndarray, device: torch.device | str, top_n: int = 5
) -> CalibrationArtifact:
    """A calibration artifact for ``model`` from a few crops and cheap pseudo-labels: fit for timing only."""
    return calibrate(model, [crops], QUICK_PERTURBATIONS, top_n=top_n, device=device)


@dataclass(frozen=True)
class Variant:
    """One way of running the scorer."""

    precision: str = "fp32"
    memory_format: str = "contiguous"
    quality_only: bool = False
    compile: bool = False
    graph: str = "eager"
    """The scorer's observed graph (``FroqScorer(graph=...)``): ``eager`` hooks or the ``frozen`` graph."""

    @property
    def name(self) -> str:
        parts = [self.precision, "channels_last" if self.memory_format == "channels_last" else "nchw"]
        if self.quality_only:
            parts.append("quality_only")
        if self.compile:
            parts.append("compiled")
        if self.graph != "eager":
            parts.append(self.graph)
        return "+".join(parts)


def default_variants(device: str, with_bf16: bool, with_compile: bool) -> list[Variant]:
    """fp32 NCHW first (the baseline every gain is relative to), then the speed options one by one; on the CPU
    the frozen observed graph (what a CPU scoring actor runs with ``scoring.graph: auto``) beside the eager
    channels_last pass, for the full pass and quality-only."""
    low = "bf16" if with_bf16 else "fp32"
    variants = [Variant(), Variant(memory_format="channels_last")]
    if device == "cpu":
        variants += [
            Variant(memory_format="channels_last", graph="frozen"),
            Variant(memory_format="channels_last", quality_only=True, graph="frozen"),
        ]
    if with_bf16:
        variants += [Variant("bf16"), Variant("bf16", "channels_last")]
    variants.append(Variant(low, "channels_last", quality_only=True))
    if with_compile:
        variants.append(Variant(low, "channels_last", compile=True))
    return variants


@dataclass
class VariantResult(ImagesPerSecond):
    variant: Variant
    images: int
    seconds: float
    quality: np.ndarray
    memory_format_used: str
    compiled: bool
    peak_torch_allocated_mib: float | None
    graph_used: str = "eager"

    def to_dict(self) -> dict[str, object]:
        return {
            "variant": self.variant.name,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "memory_format_used": self.memory_format_used,
            "compiled": self.compiled,
            "graph_used": self.graph_used,
            "peak_torch_allocated_mib": self.peak_torch_allocated_mib,
        }


def time_variant(
    model: LoadedModel,
    artifact: CalibrationArtifact,
    crops: np.ndarray,
    variant: Variant,
    *,
    device: torch.device | str,
    model_batch_size: int,
) -> VariantResult:
    """Score ``crops`` once (after a warm-up batch) with ``variant``; the network is restored to NCHW after."""
    device = torch.device(device)
    scorer = FroqScorer(
        model,
        artifact,
        device=device,
        precision=variant.precision,
        quality_only=variant.quality_only,
        model_batch_size=model_batch_size,
        memory_format=variant.memory_format,
        compile=variant.compile,
        graph=variant.graph,
    )
    try:
        scorer.score(crops[:model_batch_size])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        started = time.perf_counter()
        result = scorer.score(crops)
        synchronize(device)
        seconds = time.perf_counter() - started
    finally:
        scorer.close()
        # Module.to takes memory_format at runtime; torch's type overloads omit it
        model.network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return VariantResult(
        variant,
        len(crops),
        seconds,
        result.quality,
        scorer.memory_format,
        scorer.compiled,
        peak,
        scorer.graph,
    )


def rank_agreement(results: Sequence[VariantResult], baseline: str = "fp32+nchw") -> dict[str, float]:
    """Spearman between each variant's qualities and the baseline's (same crops, same order)."""
    by_name = {r.variant.name: r for r in results}
    if baseline not in by_name:
        return {}
    reference = by_name[baseline].quality
    return {name: spearman(r.quality, reference) for name, r in by_name.items() if name != baseline}
