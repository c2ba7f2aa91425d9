"""A plain batched embedding loop: uint8 crops -> model input transform -> network -> float32 embeddings."""

from __future__ import annotations

import numpy as np
import torch

from .base import LoadedModel


def embed_crops(
    model: LoadedModel, crops: np.ndarray, batch_size: int = 128, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Embed uint8 NHWC RGB crops with ``model``; returns float32 (N, D), not normalised.

    The network and its input transform are moved to ``device`` (the network stays there afterwards);
    crops travel to the device as uint8, one batch at a time, under ``torch.inference_mode``.
    """
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"expected uint8 crops (N, H, W, 3), got {crops.dtype} {crops.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device)
    transform = model.input_transform(source_size=crops.shape[1]).to(device)
    network = model.network.to(device)
    out = np.empty((crops.shape[0], model.embedding_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, crops.shape[0], batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size])).to(device)
            emb = network(transform(batch))
            emb = emb.reshape(emb.shape[0], -1)
            if emb.shape[1] != model.embedding_size:
                raise ValueError(
                    f"{model.name} returned embeddings of width {emb.shape[1]}, expected {model.embedding_size}"
                )
            out[start : start + emb.shape[0]] = emb.float().cpu().numpy()
    return out
