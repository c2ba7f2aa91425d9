"""The input contract of a face-recognition network: size, geometry, normalisation, channel order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

ALIGNMENTS = ("arcface112", "dlib_chip150")
CHANNEL_ORDERS = ("RGB", "BGR", "BRG")


@dataclass(frozen=True)
class InputContract:
    """How a face crop must look when it enters the network.

    ``mean``/``std`` are per channel in RGB order, in units of pixel/255:
    network value = (pixel/255 - mean) / std, then channels are reordered to ``channel_order``
    ("BRG" is the FROQ reference's [2, 0, 1] permutation of RGB).
    ``alignment`` is the face geometry the network was trained on; crops arrive ArcFace-aligned
    (``arcface112``) and are warped when the network expects another frame.
    """

    size: int
    channel_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    alignment: str = "arcface112"

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")

    def channel_index(self) -> list[int]:
        """Indices into RGB that produce ``channel_order``."""
        return ["RGB".index(c) for c in self.channel_order]

    def min_value(self) -> torch.Tensor:
        """Per-channel network value of a black pixel, in network channel order, shape (C,)."""
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        return (-mean / std)[self.channel_index()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "channel_order": self.channel_order,
            "mean": list(self.mean),
            "std": list(self.std),
            "alignment": self.alignment,
        }
