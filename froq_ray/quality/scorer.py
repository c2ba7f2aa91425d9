"""FROQ inference: quality from the per-image L2 output norms of the calibration's scoring layers: their mean
(``greedy``, the reference) or the linear observer's weighted sum of standardised log norms (``linear``; formula
in :mod:`froq_ray.quality.linear`). Only the layers with a non-zero weight are observed.

One forward pass gives both the quality and the embedding. ``quality_only=True`` abandons the forward pass
right after the deepest scoring layer has produced its counted output (see ``observer.py``): the stop
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

from ..models.base import LoadedModel
from ..models.inference import autocast_context, autocast_dtype, host_batch, model_batches

# network optimisation lives in accelerate.py (students use it too); re-exported for the callers that import it here
from . import accelerate
from .accelerate import CHECK_TOLERANCE as CHECK_TOLERANCE
from .accelerate import apply_memory_format as apply_memory_format
from .accelerate import check_batch as check_batch
from .accelerate import compile_network as compile_network
from .accelerate import compiled_or_eager as compiled_or_eager
from .accelerate import frozen_observed_network, max_relative_difference
from .accelerate import resolve_graph as resolve_graph
from .accelerate import resolve_memory_format as resolve_memory_format
from .accelerate import to_memory_format as to_memory_format
from .artifact import CalibrationArtifact, check_matches
from .linear import NORM_FLOOR
from .observer import NormObserver, StopPoint, as_embedding, probe_stop_point

log = logging.getLogger(__name__)


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
        self.layers = artifact.scoring_layers
        self._linear: tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None = None
        if artifact.linear is not None:
            lin = artifact.linear
            index = [lin.layers.index(name) for name in self.layers]
            weights, means, scales = (
                torch.tensor([values[i] for i in index], dtype=torch.float32, device=self.device)[:, None]
                for values in (lin.weights, lin.means, lin.scales)
            )
            self._linear = (weights, means, scales, float(lin.intercept))
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
            compiled = accelerate.compile_network(self.network, backend)  # looked up here: one patch point
            with torch.inference_mode():
                got, _ = self._score_chunk(observer, x, compiled)
            error, reason = max_relative_difference(got, expected), None
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
        """Per-layer norms -> quality: (L, N) float32, rows in ``self.layers`` (``artifact.scoring_layers``)
        order -> (N,) float32. ``greedy``: the mean over the selected layers. ``linear``: intercept +
        sum_l w_l (log(max(n_l, NORM_FLOOR)) - mean_l) / scale_l (float32). Every scoring path (the eager
        hooked pass, a frozen observed graph) combines its norms here."""
        if self._linear is None:
            return norms.mean(dim=0)
        weights, means, scales, intercept = self._linear
        z = (torch.log(norms.float().clamp_min(NORM_FLOOR)) - means) / scales
        return (weights * z).sum(dim=0) + intercept

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

    def _batches(self, batch: torch.Tensor):
        """Network input per model batch (:func:`~froq_ray.models.inference.model_batches`)."""
        return model_batches(
            batch, self.transform, self.device, self.model_batch_size, memory_format=self.memory_format
        )

    def _observed_chunks(self, batch: torch.Tensor):
        """(quality, embedding) per model batch, from the frozen graph, the persistent (compiled) or a per-call
        observer."""
        if self._frozen is not None:
            for x in self._batches(batch):
                yield self._frozen_chunk(self._frozen, x)
            return
        if self._persistent is not None:
            for x in self._batches(batch):
                yield self._score_chunk(self._persistent, x, self._compiled)
            return
        with NormObserver(self.network, self.layers, self.stop_at) as observer:
            for x in self._batches(batch):
                yield self._score_chunk(observer, x)

    def score(self, crops: np.ndarray | torch.Tensor) -> ScoreResult:
        """uint8 crops (N, H, W, 3) -- or float NCHW network input -- -> quality (and embeddings)."""
        batch = host_batch(crops, self.device)  # once per call: model_batches then slices it
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
