"""FROQ inference: quality = mean over the selected layers of their raw per-image L2 output norms.

One forward pass gives both the quality and the embedding. ``quality_only=True`` abandons the forward pass
right after the deepest selected layer has produced its counted output (see ``observer.py``): the stop
point is found by a probe pass at construction, on a zero input of the contract's size.

Under bf16/fp16 autocast the norms are still accumulated in float32 (the hooks reduce in float32); the
precision used is recorded on the scorer and in every :class:`ScoreResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.base import LoadedModel
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


@dataclass(frozen=True)
class ScoreResult:
    quality: np.ndarray  # (N,) float32
    embedding: np.ndarray | None  # (N, D) float32, None in quality-only mode
    precision: str


class FroqScorer:
    """Scores batches with a calibrated observer; loads nothing, moves the network to ``device`` once."""

    def __init__(
        self,
        model: LoadedModel,
        artifact: CalibrationArtifact,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        quality_only: bool = False,
        model_batch_size: int = 256,
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
        if quality_only:
            size = model.contract.size
            sample = torch.zeros(1, 3, size, size, device=self.device)
            self.stop_at = probe_stop_point(self.network, self.layers, sample)

    def _score_chunk(self, observer: NormObserver, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with autocast_context(self.device, self._dtype):
            output = observer.forward(x)
        norms = observer.norms()
        missing = [name for name in self.layers if name not in norms]
        if missing:
            raise RuntimeError(f"selected layers produced no output in this forward pass: {', '.join(missing)}")
        quality = torch.stack([norms[name] for name in self.layers]).mean(dim=0)
        embedding = None if output is None else as_embedding(output)
        return quality, embedding

    def score(self, crops: np.ndarray | torch.Tensor) -> ScoreResult:
        """uint8 crops (N, H, W, 3) -- or float NCHW network input -- -> quality (and embeddings)."""
        batch = as_batch_tensor(crops)
        qualities, embeddings = [], []
        with torch.inference_mode(), NormObserver(self.network, self.layers, self.stop_at) as observer:
            for rows in iter_chunks(batch.shape[0], self.model_batch_size):
                x = network_input(batch[rows], self.transform, self.device)
                quality, embedding = self._score_chunk(observer, x)
                qualities.append(quality.cpu())
                if embedding is not None:
                    embeddings.append(embedding.cpu())
        if not qualities:
            empty_embedding = None if self.quality_only else np.zeros((0, self.model.embedding_size), np.float32)
            return ScoreResult(np.zeros(0, np.float32), empty_embedding, self.precision)
        quality = torch.cat(qualities).numpy().astype(np.float32)
        embedding = None if self.quality_only else torch.cat(embeddings).numpy().astype(np.float32)
        return ScoreResult(quality, embedding, self.precision)
