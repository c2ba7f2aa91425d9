"""Faster copies of a network for the forward passes that need no hooks.

The perturbation pseudo-labels cost ~76 forward passes per image, and only the embedding of each perturbed
copy is used: no observer hook has to see the network's modules. Those passes may therefore run through a
frozen TorchScript copy (batch-norm folded into the convolutions, oneDNN layouts on the CPU), which is
2-3x faster on a CPU. The copy is checked against the original network on a sample batch and discarded, with
a log line, when tracing fails or the outputs differ; the observed (hooked) pass always uses the original.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)

TOLERANCE = 1e-3  # relative to the largest embedding value: folding batch-norm reorders float sums


def frozen_copy(network: nn.Module, sample: torch.Tensor) -> nn.Module:
    """A frozen, optimised TorchScript copy of ``network`` checked on ``sample`` (float NCHW network input);
    ``network`` itself when that is not possible. The device is ``sample``'s."""
    network = network.eval().to(sample.device)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", torch.jit.TracerWarning
            )  # fixed input size: shape checks are constant
            reference = network(sample)
            traced = torch.jit.trace(network, sample, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced) if traced.training else traced)
            frozen(sample)  # the first calls specialise the graph
            candidate = frozen(sample)
    except Exception as exc:  # noqa: BLE001 - tracing is an optimisation: any failure falls back
        log.info("frozen copy of %s not used (%s: %s)", type(network).__name__, type(exc).__name__, exc)
        return network
    if not isinstance(reference, torch.Tensor) or not isinstance(candidate, torch.Tensor):
        log.info("frozen copy not used: the network does not return one tensor")
        return network
    scale = float(reference.abs().max().clamp_min(1e-6))
    error = float((candidate.float() - reference.float()).abs().max()) / scale
    if error > TOLERANCE:
        log.info("frozen copy not used: relative difference %.2e on the check batch", error)
        return network
    return frozen
