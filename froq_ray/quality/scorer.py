"""FROQ inference: quality = mean over the selected layers of their raw per-image L2 output norms.

One forward pass gives both the quality and the embedding. ``quality_only=True`` abandons the forward pass
right after the deepest selected layer has produced its counted output (see ``observer.py``): the stop
point is found by a probe pass at construction, on a zero input of the contract's size.

Under bf16/fp16 autocast the norms are still accumulated in float32 (the hooks reduce in float32); the
precision used is recorded on the scorer and in every :class:`ScoreResult`.

Speed options (none changes what is computed; each has a safe fallback):

- host -> device: uint8 crops travel as uint8 (4x fewer bytes than float input), from pinned host memory with
  non-blocking copies on CUDA; the normalisation runs on the device (``ModelInputTransform``); results stay
  on the device until one copy back per :meth:`FroqScorer.score` call.
- ``memory_format``: ``channels_last`` (NHWC) network weights and input, which tensor-core convolutions
  prefer and which oneDNN also runs faster on the CPU (measured on a 2-core EPYC: 1.61x MobileFaceNet,
  1.31x IR-101, 1.12x the dlib ResNet; docs/performance.md); ``auto`` = channels_last. It is kept only when a check
  batch gives the same output as NCHW (:func:`apply_memory_format`). The default is ``contiguous``, which
  keeps results bit-identical to earlier versions; the scoring stage asks for ``auto``.
- ``compile``: ``torch.compile`` the network, with the observer hooks registered for the scorer's lifetime
  (hooks added after compilation would force a recompilation per call). Not combined with ``quality_only``
  (its stop hook raises through the compiled graph). When compilation fails, or the compiled scores differ
  from the eager ones on a check batch, a warning is logged and the scorer runs eagerly.
- ``graph``: ``frozen`` runs the observed forward pass as one frozen TorchScript graph
  (:func:`~froq_ray.quality.accelerate.frozen_observed_network`: batch-norm folded into the convolutions, oneDNN
  on the CPU; 1.75x MobileFaceNet on a 2-core CPU) that returns the selected layers' norms (L, N) and the
  embedding; ``eager`` runs the network with observer hooks; ``auto`` (:func:`resolve_graph`) = frozen on the CPU
  in fp32 without ``compile``, eager otherwise. The frozen graph is kept only when it reproduces the hooked
  pass on a check batch of another batch size; otherwise one warning and the scorer runs eagerly
  (:attr:`FroqScorer.graph` says which ran). Both paths combine the norms in :meth:`FroqScorer._combine`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.base import LoadedModel
from ..vocabulary import GRAPHS, MEMORY_FORMATS
from .accelerate import frozen_observed_network
from .artifact import CalibrationArtifact, check_matches
from .observer import (
    NormObserver,
    StopPoint,
    as_batch_tensor,
    as_embedding,
    autocast_context,
    autocast_dtype,
    iter_chunks,
    network_input,
    probe_stop_point,
)

log = logging.getLogger(__name__)

CHECK_TOLERANCE = {
    "fp32": 1e-3,
    "bf16": 3e-2,
    "fp16": 1e-2,
}  # relative, on a check batch, per PRECISIONS name


def resolve_memory_format(requested: str) -> str:
    """``auto`` -> ``channels_last`` (faster on CUDA and on oneDNN CPUs alike for the zoo's CNNs; a network
    for which it is not equivalent falls back in :func:`apply_memory_format`); other names are checked and
    kept. Raises ``ValueError`` for a name not in :data:`MEMORY_FORMATS`."""
    if requested not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {list(MEMORY_FORMATS)}, got {requested!r}")
    return "channels_last" if requested == "auto" else requested


def resolve_graph(requested: str, device: torch.device | str, precision: str, compile: bool) -> str:
    """The observed graph a scorer runs: ``auto`` -> ``frozen`` on the CPU in fp32 without ``compile`` (where
    it is measured faster), ``eager`` otherwise (a GPU keeps eager or ``torch.compile``; bf16/fp16 autocast
    stays eager). Raises ``ValueError`` for a name not in :data:`GRAPHS` and for ``frozen`` with a precision
    other than fp32 or with ``compile``."""
    if requested not in GRAPHS:
        raise ValueError(f"graph must be one of {list(GRAPHS)}, got {requested!r}")
    if requested == "auto":
        cpu = torch.device(device).type == "cpu"
        return "frozen" if cpu and precision == "fp32" and not compile else "eager"
    if requested == "frozen" and (precision != "fp32" or compile):
        raise ValueError(
            f"graph 'frozen' runs fp32 without torch.compile (got precision {precision!r}, compile={compile})"
        )
    return requested


def check_batch(size: int, device: torch.device | str) -> torch.Tensor:
    """The fixed batch (2 seeded normal images, float NCHW network input of side ``size``) on which an
    optimised network (layout, compile, TorchScript copy) is compared with the plain one."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)


def _relative_difference(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    scale = float(reference.float().abs().max().clamp_min(1e-6))
    return float((candidate.float() - reference.float()).abs().max()) / scale


def apply_memory_format(network: nn.Module, memory_format: str, sample: torch.Tensor) -> str:
    """Put ``network`` (in place) in ``memory_format`` if it runs and matches NCHW on ``sample`` (float NCHW
    network input on the network's device); returns the format in use (``contiguous`` after a fallback)."""
    if memory_format == "contiguous":
        return memory_format
    with torch.inference_mode():
        reference = as_embedding(network(sample))
        try:
            # Module.to takes memory_format at runtime; torch's type overloads omit it
            network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            candidate = as_embedding(network(sample.contiguous(memory_format=torch.channels_last)))
            error = _relative_difference(candidate, reference)
        except Exception as exc:  # noqa: BLE001 - a layout is an optimisation: any failure falls back
            error, reason = float("inf"), f"{type(exc).__name__}: {exc}"
        else:
            reason = f"relative difference {error:.2e} on the check batch"
    if error <= CHECK_TOLERANCE["fp32"]:
        return memory_format
    # Module.to takes memory_format at runtime; torch's type overloads omit it
    network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    log.warning("channels_last not used for %s (%s); running NCHW", type(network).__name__, reason)
    return "contiguous"


def to_memory_format(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if memory_format == "channels_last" else x


def compile_network(network: nn.Module, backend: str = "inductor") -> Callable[..., Any]:
    """``torch.compile`` with fixed shapes first (a batch of another size compiles once more)."""
    return torch.compile(network, backend=backend, dynamic=False)


def compiled_or_eager(
    network: nn.Module, sample: torch.Tensor, precision: str = "fp32", backend: str = "inductor"
) -> Callable[..., Any]:
    """A compiled ``network`` for hook-free passes (e.g. perturbed copies), or ``network`` itself when
    compiling fails or its output on ``sample`` differs from the eager output (logged)."""
    device, dtype = sample.device, autocast_dtype(precision)
    try:
        with torch.inference_mode(), autocast_context(device, dtype):
            expected = as_embedding(network(sample))
            compiled = compile_network(network, backend)
            error, reason = _relative_difference(as_embedding(compiled(sample)), expected), None
    except Exception as exc:  # noqa: BLE001 - compilation is an optimisation: any failure falls back
        error, reason = float("inf"), f"{type(exc).__name__}: {exc}"
    if error > CHECK_TOLERANCE[precision]:
        log.warning(
            "torch.compile not used for %s (%s); running eagerly",
            type(network).__name__,
            reason or f"relative difference {error:.2e} from eager on the check batch",
        )
        return network
    return compiled


@dataclass(frozen=True)
class ScoreResult:
    quality: np.ndarray  # (N,) float32
    embedding: np.ndarray | None  # (N, D) float32, None in quality-only mode
    precision: str


class FroqScorer:
    """Scores batches with a calibrated observer; loads nothing, moves the network to ``device`` once.

    ``graph``: ``eager`` (default: hooks on the network, results as before), ``frozen`` or ``auto``
    (:func:`resolve_graph`; the module docstring). Raises ``ValueError`` for bad arguments and
    :class:`~froq_ray.quality.artifact.ArtifactMismatchError` for an artifact of another model."""

    def __init__(
        self,
        model: LoadedModel,
        artifact: CalibrationArtifact,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        quality_only: bool = False,
        model_batch_size: int = 256,
        memory_format: str = "contiguous",
        compile: bool = False,
        compile_backend: str = "inductor",
        graph: str = "eager",
    ) -> None:
        check_matches(artifact, model)
        if model_batch_size < 1:
            raise ValueError(f"model_batch_size must be >= 1, got {model_batch_size}")
        self.model = model
        self.artifact = artifact
        self.device = torch.device(device)
        self.precision = precision
        self._dtype = autocast_dtype(precision)
        self.quality_only = quality_only
        self.model_batch_size = model_batch_size
        self.layers = list(artifact.selected_layers)
        self.network = model.network.to(self.device)
        self.transform = model.input_transform().to(self.device)
        self.stop_at: StopPoint | None = None
        size = model.contract.size
        if quality_only:
            sample = torch.zeros(1, 3, size, size, device=self.device)
            self.stop_at = probe_stop_point(self.network, self.layers, sample)
        check = check_batch(size, self.device)
        self.memory_format = apply_memory_format(self.network, resolve_memory_format(memory_format), check)
        self._compiled: Callable[..., Any] | None = None
        self._persistent: NormObserver | None = None
        self._frozen: torch.jit.ScriptModule | None = None
        self.graph = resolve_graph(graph, self.device, precision, compile)
        """The observed graph in use: ``frozen`` or ``eager`` (also after a fallback from ``frozen``)."""
        if self.graph == "frozen":
            self._frozen = frozen_observed_network(
                self.network, self.layers, to_memory_format(check, self.memory_format), not quality_only
            )
            self.graph = "eager" if self._frozen is None else "frozen"
        if compile:
            self._enable_compile(check, compile_backend)

    @property
    def compiled(self) -> bool:
        """Whether scoring runs through ``torch.compile`` (False after a fallback)."""
        return self._compiled is not None

    def _enable_compile(self, check: torch.Tensor, backend: str) -> None:
        """Compile the network with persistent hooks; keep it only if it reproduces the eager scores."""
        if self.quality_only:
            log.warning("torch.compile is not used with quality_only (the stop hook ends the graph early)")
            return
        x = to_memory_format(check, self.memory_format)
        with torch.inference_mode(), NormObserver(self.network, self.layers) as eager:
            expected, _ = self._score_chunk(eager, x)
        observer = NormObserver(self.network, self.layers).__enter__()
        try:
            compiled = compile_network(self.network, backend)
            with torch.inference_mode():
                got, _ = self._score_chunk(observer, x, compiled)
            error, reason = _relative_difference(got, expected), None
        except Exception as exc:  # noqa: BLE001 - compilation is an optimisation: any failure falls back
            error, reason = float("inf"), f"{type(exc).__name__}: {exc}"
        if error > CHECK_TOLERANCE[self.precision]:
            observer.__exit__(None, None, None)
            log.warning(
                "torch.compile not used for %s (%s); scoring eagerly",
                self.model.model_id,
                reason or f"relative difference {error:.2e} from eager on the check batch",
            )
            return
        self._compiled, self._persistent = compiled, observer

    def close(self) -> None:
        """Remove the persistent hooks of a compiled scorer (a no-op otherwise)."""
        if self._persistent is not None:
            self._persistent.__exit__(None, None, None)
        self._persistent = self._compiled = None

    def _combine(self, norms: torch.Tensor) -> torch.Tensor:
        """Per-layer norms -> quality: (L, N) float32, rows in ``artifact.selected_layers`` order -> (N,)
        float32. FROQ's quality is the mean over the selected layers. Every scoring path (the eager hooked
        pass, a frozen observed graph) combines its norms here, so a method that weighs the layers differently
        changes this one method."""
        return norms.mean(dim=0)

    def _frozen_chunk(
        self, frozen: torch.jit.ScriptModule, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        output = frozen(x)
        norms, embedding = (output, None) if self.quality_only else output
        return self._combine(norms), embedding

    def _score_chunk(
        self, observer: NormObserver, x: torch.Tensor, compiled: Callable[..., Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with autocast_context(self.device, self._dtype):
            output = observer.forward(x) if compiled is None else compiled(x)
        quality = self._combine(observer.stacked_norms())
        embedding = None if output is None else as_embedding(output)
        return quality, embedding

    def _host_batch(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The batch as a tensor; uint8 host batches bound for CUDA are pinned for non-blocking copies."""
        batch = as_batch_tensor(crops)
        if self.device.type == "cuda" and batch.device.type == "cpu" and batch.dtype == torch.uint8:
            try:
                return batch.pin_memory()
            except RuntimeError as exc:  # pinning can fail (locked-memory limits): copy from pageable memory
                log.debug("pinned memory unavailable (%s)", exc)
        return batch

    def _chunk_input(self, chunk: torch.Tensor) -> torch.Tensor:
        if chunk.device != self.device:
            chunk = chunk.to(self.device, non_blocking=chunk.is_pinned())
        return to_memory_format(network_input(chunk, self.transform, self.device), self.memory_format)

    def _observed_chunks(self, batch: torch.Tensor):
        """(quality, embedding) per model batch, from the frozen graph, the persistent (compiled) or a per-call
        observer."""
        if self._frozen is not None:
            for rows in iter_chunks(batch.shape[0], self.model_batch_size):
                yield self._frozen_chunk(self._frozen, self._chunk_input(batch[rows]))
            return
        if self._persistent is not None:
            for rows in iter_chunks(batch.shape[0], self.model_batch_size):
                yield self._score_chunk(self._persistent, self._chunk_input(batch[rows]), self._compiled)
            return
        with NormObserver(self.network, self.layers, self.stop_at) as observer:
            for rows in iter_chunks(batch.shape[0], self.model_batch_size):
                yield self._score_chunk(observer, self._chunk_input(batch[rows]))

    def score(self, crops: np.ndarray | torch.Tensor) -> ScoreResult:
        """uint8 crops (N, H, W, 3) -- or float NCHW network input -- -> quality (and embeddings)."""
        batch = self._host_batch(crops)
        qualities, embeddings = [], []
        with torch.inference_mode():
            for quality, embedding in self._observed_chunks(batch):
                qualities.append(quality)
                if embedding is not None:
                    embeddings.append(embedding)
        if not qualities:
            empty_embedding = (
                None if self.quality_only else np.zeros((0, self.model.embedding_size), np.float32)
            )
            return ScoreResult(np.zeros(0, np.float32), empty_embedding, self.precision)
        quality = torch.cat(qualities).cpu().numpy().astype(np.float32)  # one device -> host copy per call
        embedding = None if self.quality_only else torch.cat(embeddings).cpu().numpy().astype(np.float32)
        return ScoreResult(quality, embedding, self.precision)
