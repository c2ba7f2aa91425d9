"""Seeded random weights for registry models that need a weights file, so speed can be measured without one.

The file is a plain state dict saved with ``torch.save``, read back through the model's own registry loader
(strict key and shape checks included), so the benchmark times exactly the network ``load_model`` builds.
Random weights give meaningless scores but the same compute as trained ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..models.registry import available_models


def _adaface(name: str) -> nn.Module:
    from ..models.adaface import ARCHITECTURES, AdaFaceBackbone

    return AdaFaceBackbone(ARCHITECTURES[name])


def _iresnet(name: str) -> nn.Module:
    from ..models.iresnet import build_iresnet

    return build_iresnet(int(name.removeprefix("iresnet")))


def _mobilefacenet(_name: str) -> nn.Module:  # BUILDERS' signature; one size only
    from ..models.mobilefacenet import MobileFaceNet

    return MobileFaceNet()


BUILDERS: dict[str, Callable[[str], nn.Module]] = {
    "adaface": _adaface,
    "iresnet": _iresnet,
    "mobilefacenet": _mobilefacenet,
}


def needs_weights(name: str) -> bool:
    entries = available_models()
    if name not in entries:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(entries)}")
    return entries[name].needs_weights


def random_weights_file(name: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write a seeded random state dict for registry model ``name`` to ``folder``; returns its path."""
    family = available_models()[name].family
    if family not in BUILDERS:
        raise ValueError(f"no random-weights builder for model family {family!r} ({name}); pass real weights")
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
        torch.manual_seed(seed)
        network = BUILDERS[family](name)
    path = Path(folder) / f"{name}-random-seed{seed}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path
