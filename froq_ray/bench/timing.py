"""Timing pieces shared by the throughput benchmark's phases: the images-per-second rate of a timed result and
the CUDA synchronisation before a clock is read."""

from __future__ import annotations

import torch


class ImagesPerSecond:
    """Mixin for a timed result with ``images`` (count) and ``seconds`` (wall time of the measured span)."""

    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        """``images / seconds`` (float); 0.0 when no time was measured (``seconds <= 0``)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def synchronize(device: torch.device) -> None:
    """Wait until the queued work of a CUDA ``device`` is done (nothing to wait for on the CPU), so that a clock
    read next covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
