"""Where a network runs and in what precision (the one place that resolves a device name and a precision
name), and a plain batched embedding loop: uint8 crops -> model input transform -> network -> float32
embeddings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import torch

from ..errors import UserError
from ..imaging.prepare import as_batch_tensor, network_input
from ..vocabulary import PRECISIONS, Precision
from .base import LoadedModel

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def to_memory_format(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    """``x`` in ``channels_last`` (NHWC strides) for that format, else unchanged (``contiguous``)."""
    return x.contiguous(memory_format=torch.channels_last) if memory_format == "channels_last" else x


def host_batch(crops: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch as a tensor; a uint8 host batch bound for CUDA is pinned so that its copies can be non-blocking
    (pageable memory when pinning fails, e.g. under a locked-memory limit)."""
    batch = as_batch_tensor(crops)
    if torch.device(device).type == "cuda" and batch.device.type == "cpu" and batch.dtype == torch.uint8:
        try:
            return batch.pin_memory()
        except RuntimeError as exc:
            log.debug("pinned memory unavailable (%s)", exc)
    return batch


def model_batches(
    crops: np.ndarray | torch.Tensor,
    transform: torch.nn.Module,
    device: torch.device | str,
    batch_size: int,
    *,
    memory_format: str = "contiguous",
) -> Iterator[torch.Tensor]:
    """The one batched-inference feed: ``crops`` (uint8 (N, H, W, 3) or float (N, C, H, W), numpy or torch) ->
    float32 network input on ``device``, ``batch_size`` rows at a time (the last batch may be smaller), in
    ``memory_format``. uint8 host batches bound for CUDA come from pinned memory with non-blocking copies
    (:func:`host_batch`), and ``transform`` (a ``ModelInputTransform`` on ``device``) runs on the device
    (:func:`~froq_ray.imaging.prepare.network_input`). The caller holds ``torch.inference_mode()`` (see
    :func:`map_model_batches`). ``ValueError`` for ``batch_size < 1``; what ``network_input`` raises."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device)
    batch = host_batch(crops, device)
    for start in range(0, batch.shape[0], batch_size):
        chunk = batch[start : start + batch_size]
        if chunk.device != device:
            chunk = chunk.to(device, non_blocking=chunk.is_pinned())
        yield to_memory_format(network_input(chunk, transform, device), memory_format)


def map_model_batches(
    fn: Callable[[torch.Tensor], T],
    crops: np.ndarray | torch.Tensor,
    transform: torch.nn.Module,
    device: torch.device | str,
    *,
    batch_size: int,
    memory_format: str = "contiguous",
) -> list[T]:
    """``[fn(x) for x in model_batches(...)]`` under ``torch.inference_mode()``: one result per model batch."""
    with torch.inference_mode():
        return [
            fn(x) for x in model_batches(crops, transform, device, batch_size, memory_format=memory_format)
        ]


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
    transform = model.input_transform(source_size=crops.shape[1]).to(device)
    network = model.network.to(device)

    def embed(x: torch.Tensor) -> np.ndarray:
        emb = network(x)
        emb = emb.reshape(emb.shape[0], -1)
        if emb.shape[1] != model.embedding_size:
            raise ValueError(
                f"{model.name} returned embeddings of width {emb.shape[1]}, expected {model.embedding_size}"
            )
        return emb.float().cpu().numpy()

    parts = map_model_batches(embed, crops, transform, device, batch_size=batch_size)
    return np.concatenate(parts) if parts else np.empty((0, model.embedding_size), dtype=np.float32)
