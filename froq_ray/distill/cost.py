"""What a student costs: parameter count, FLOPs per image, and measured CPU throughput.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass in eval mode: it counts the
matrix work (convolutions, matmuls; 2 FLOPs per multiply-add) and ignores the cheap elementwise ops
(BatchNorm, activations, pooling), the usual convention for comparing networks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(network: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics are not counted)."""
    return sum(p.numel() for p in network.parameters())


def count_flops(network: nn.Module, input_size: int, batch: int = 1) -> int:
    """FLOPs per image of one eval-mode forward pass on a (batch, 3, input_size, input_size) input."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    reference = next(iter(network.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    x = torch.zeros(batch, 3, input_size, input_size, device=device)
    was_training = network.training
    network.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            network(x)
    finally:
        network.train(was_training)
    return int(counter.get_total_flops()) // batch


def cpu_images_per_second(
    fn: Callable[[torch.Tensor], Any], batch: torch.Tensor, min_seconds: float = 2.0, warmup: int = 2
) -> float:
    """Images per second of ``fn(batch)`` (run ``warmup`` times first, then repeatedly for ``min_seconds``)."""
    images = int(batch.shape[0])
    with torch.no_grad():
        for _ in range(warmup):
            fn(batch)
        calls = 0
        start = time.perf_counter()
        while True:
            fn(batch)
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return calls * images / elapsed
