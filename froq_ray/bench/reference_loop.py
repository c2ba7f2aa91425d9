"""The FROQ reference's inference loop, re-implemented for timing (baseline (a) of the throughput benchmark).

What the reference (``observer/inference.py`` of LSIbabnikz/FROQ) does, and this module does the same way:

- a map-style ``Dataset`` over image files whose ``__getitem__`` opens the file with PIL, converts it to RGB
  and applies the transform in the loader process (workers when ``num_workers > 0``), returning
  ``(path, tensor)``;
- the transform: resize to the network size (bilinear; skipped when the crop already has it), to float in
  [0, 1], normalise with the model's mean/std, reorder channels -- written with numpy/torch (no torchvision);
- ``torch.utils.data.DataLoader(batch_size=64)``, no pinned memory, a blocking host-to-device copy;
- fp32 under ``torch.no_grad()``; forward hooks on the selected layers store ``output.detach().clone()``;
  after the forward pass each layer's per-image L2 norm is computed from the clone and moved to the host,
  the quality is their mean, and ``{path: quality}`` is collected in a dict.

The model comes from the froq_ray registry and the layers from a calibration artifact, so both paths of the
benchmark score the same network with the same layers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..imaging.contract import InputContract
from ..quality.observer import resolve_layers
from .timing import ImagesPerSecond, synchronize

REFERENCE_BATCH_SIZE = 64


class ReferenceTransform:
    """PIL RGB image -> float32 CHW tensor: resize, /255, (x - mean) / std, channel order (see module doc)."""

    def __init__(self, contract: InputContract) -> None:
        self.size = contract.size
        self.mean = np.asarray(contract.mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(contract.std, dtype=np.float32).reshape(3, 1, 1)
        self.order = list(contract.channel_index())

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        chw = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        chw = (chw - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(chw[self.order]))


class ImageFileDataset(Dataset):
    """``(path, transformed tensor)`` per file, decoded with PIL in ``__getitem__``."""

    def __init__(self, paths: Sequence[str | Path], transform: ReferenceTransform) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor]:
        path = self.paths[index]
        with Image.open(path) as image:
            return path, self.transform(image.convert("RGB"))


class CloningHooks:
    """Forward hooks that keep a detached clone of each selected layer's latest output."""

    def __init__(self, network: nn.Module, layers: Sequence[str]) -> None:
        self.layers = list(layers)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [
            module.register_forward_hook(self._hook(name))
            for name, module in resolve_layers(network, layers).items()
        ]

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            self.outputs[name] = tensor.detach().clone()

        return hook

    def quality(self, batch_size: int) -> torch.Tensor:
        """Mean over the layers of each image's L2 norm, accumulated on the host as the reference does."""
        total = torch.zeros(batch_size)
        for name in self.layers:
            total += torch.linalg.norm(self.outputs[name].reshape(batch_size, -1), dim=1).cpu()
        return total / len(self.layers)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass(frozen=True)
class LoopResult(ImagesPerSecond):
    images: int
    seconds: float
    qualities: dict[str, float]


def run_reference_loop(
    paths: Sequence[str | Path],
    network: nn.Module,
    contract: InputContract,
    layers: Sequence[str],
    *,
    device: torch.device | str,
    num_workers: int = 0,
    batch_size: int = REFERENCE_BATCH_SIZE,
) -> LoopResult:
    """Score ``paths`` the reference way; the time covers loader start-up through the last result."""
    device = torch.device(device)
    network = network.to(device).eval()
    loader = DataLoader(
        ImageFileDataset(paths, ReferenceTransform(contract)),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    hooks = CloningHooks(network, layers)
    qualities: dict[str, float] = {}
    try:
        synchronize(device)
        started = time.perf_counter()
        with torch.no_grad():
            for names, images in loader:
                network(images.to(device)).detach()
                qualities.update(zip(names, hooks.quality(len(names)).numpy().tolist(), strict=True))
        synchronize(device)
        seconds = time.perf_counter() - started
    finally:
        hooks.remove()
    return LoopResult(len(qualities), seconds, qualities)
