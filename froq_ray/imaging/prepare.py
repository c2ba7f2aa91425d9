"""uint8 face crops -> normalised network input, as a torch module so it runs on the model's device.

Crops travel from the decode stage as uint8 NHWC RGB arrays (small and cheap to move); geometry
(resize, or the fixed ArcFace -> dlib-chip warp), scaling, normalisation and channel order are applied
here, on the CPU or the GPU alike.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .contract import InputContract

SOURCE_ALIGNMENT = "arcface112"


def as_batch_tensor(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A numpy array (any strides, e.g. a reversed view) or tensor -> tensor, without copying when possible."""
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(batch))
    return torch.as_tensor(batch)


def network_input(
    batch: np.ndarray | torch.Tensor, transform: nn.Module, device: torch.device
) -> torch.Tensor:
    """A batch -> float32 NCHW network input on ``device``.

    uint8 batches are crops (N, H, W, 3) and go through ``transform`` (a ``ModelInputTransform`` already on
    ``device``); floating batches are taken to be network input already (N, C, H, W) and are only moved. The one
    place crops become network input (scorer, pseudo-labels, calibration, students, the embedding loop). Raises
    ``TypeError`` for another dtype, ``ValueError`` for float input that is not 4-D.
    """
    tensor = as_batch_tensor(batch)
    if tensor.dtype == torch.uint8:
        return transform(tensor.to(device))
    if not tensor.is_floating_point():
        raise TypeError(f"expected uint8 crops or float network input, got dtype {tensor.dtype}")
    if tensor.dim() != 4:
        raise ValueError(f"expected float network input of shape (N, C, H, W), got {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


class ModelInputTransform(nn.Module):
    """uint8 crops (N, H, W, 3) RGB -> float32 (N, 3, S, S) network input of ``contract`` (geometry, scaling,
    normalisation, channel order); ``ValueError`` for another shape. Move it to the device the crops are on."""

    scale: torch.Tensor  # (1, 3, 1, 1) float32 buffers: x * scale + shift == (x / 255 - mean) / std
    shift: torch.Tensor

    def __init__(self, contract: InputContract, source_size: int = 112) -> None:
        super().__init__()
        self.contract = contract
        self.source_size = source_size
        mean = torch.tensor(contract.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(contract.std, dtype=torch.float32).view(1, 3, 1, 1)
        # x/255 - mean) / std  ==  x * scale + shift
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)
        self.order = contract.channel_index()

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW RGB pixels of the source crop -> float NCHW in the network's frame and size."""
        c = self.contract
        if c.alignment == "dlib_chip150":
            from .align import warp_arcface_to_dlib_chip

            return warp_arcface_to_dlib_chip(x, c.size)
        if x.shape[-1] != c.size or x.shape[-2] != c.size:
            return F.interpolate(
                x, size=(c.size, c.size), mode="bilinear", align_corners=False, antialias=True
            )
        return x

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if crops.dim() != 4 or crops.shape[-1] != 3:
            raise ValueError(f"expected uint8 crops of shape (N, H, W, 3), got {tuple(crops.shape)}")
        x = crops.permute(0, 3, 1, 2).to(torch.float32)
        x = self.geometry(x)
        x = x * self.scale + self.shift
        if self.order != [0, 1, 2]:
            x = x[:, self.order]
        return x.contiguous()
