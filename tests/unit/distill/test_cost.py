"""Cost helpers: parameter and FLOP counts against hand formulas, the throughput timer."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from froq_ray.distill.cost import count_flops, count_params, cpu_images_per_second


def test_conv_flops_equal_the_hand_formula():
    size = 20
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    out = 10  # ceil(20 / 2)
    expected = 2 * 8 * out * out * 3 * 3 * 3  # 2 FLOPs per multiply-add, per output element
    assert count_flops(conv, size) == expected
    assert count_flops(conv, size, batch=3) == expected  # per image
    grouped = nn.Conv2d(3, 6, 3, padding=1, groups=3)
    assert count_flops(grouped, size) == 2 * 6 * size * size * 1 * 3 * 3


def test_linear_flops_equal_the_hand_formula():
    size = 6
    network = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 7))
    assert count_flops(network, size) == 2 * 3 * size * size * 7
    assert count_params(network) == 3 * size * size * 7 + 7


def test_count_params_skips_buffers_and_count_flops_keeps_the_mode():
    network = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    assert count_params(network) == 12 + 8  # conv weight + BN affine; running stats are buffers
    network.train()
    count_flops(network, 8)
    assert network.training
    assert float(network[1].num_batches_tracked) == 0  # ran in eval mode
    with pytest.raises(ValueError, match="batch must be >= 1"):
        count_flops(network, 8, batch=0)


def test_images_per_second_counts_images_over_the_measured_time():
    calls = []

    def fn(batch: torch.Tensor) -> None:
        calls.append(batch.shape[0])
        time.sleep(0.01)

    rate = cpu_images_per_second(fn, torch.zeros(4, 3, 8, 8), min_seconds=0.1, warmup=2)
    timed_calls = len(calls) - 2
    assert timed_calls >= 1
    assert 0 < rate <= 4 / 0.01  # each call sleeps 10 ms for 4 images
    assert rate <= 4 * timed_calls / 0.1  # timed for at least min_seconds
