"""Where a network runs and in what precision (the one place that resolves a device name and a precision
name), and a plain batched embedding loop: uint8 crops -> model input transform -> network -> float32
embeddings."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import UserError
from ..vocabulary import PRECISIONS, Precision
from .base import LoadedModel

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Each name of :data:`froq_ray.vocabulary.PRECISIONS` -> its autocast dtype (``None``: fp32, no autocast)."""
assert tuple(AUTOCAST_DTYPES) == PRECISIONS


class DeviceUnavailableError(UserError, RuntimeError):
    """``cuda`` was asked for where torch sees no CUDA device."""


def resolve_device(requested: str, key: str = "device") -> str:
    """A requested device name -> the one to use: ``auto`` -> ``cuda`` when torch sees a CUDA device, else
    ``cpu``; ``cpu`` / ``cuda[:i]`` kept. Raises :class:`DeviceUnavailableError` (naming ``key``, the config key
    or argument that asked) for ``cuda`` without a visible CUDA device."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"{key} is {requested!r} but no CUDA device is visible to this process")
    return requested


def autocast_dtype(precision: str) -> torch.dtype | None:
    """``"fp32"|"bf16"|"fp16"`` -> the autocast dtype (``None`` for fp32); ``ValueError`` for another name."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return AUTOCAST_DTYPES[precision]


def torch_dtype(precision: str) -> torch.dtype:
    """``"fp32"|"bf16"|"fp16"`` -> the tensor dtype that precision stores values in (float32 for fp32)."""
    return autocast_dtype(precision) or torch.float32


def precision_name(dtype: torch.dtype | None) -> Precision:
    """The inverse of :func:`autocast_dtype`; ``ValueError`` for a dtype that is not one of them."""
    for name, value in AUTOCAST_DTYPES.items():
        if value == dtype:
            return name  # type: ignore[return-value]  # the keys are PRECISIONS (asserted above)
    raise ValueError(f"unsupported autocast dtype {dtype}")


def autocast_context(
    device: torch.device | str, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type, or a no-op context for fp32 (``dtype=None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


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
