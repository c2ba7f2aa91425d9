"""A tiny face-recognition-like network for fast tests (no weights file, seeded initialisation).

Structure (module names as ``named_modules`` lists them)::

    stem            Sequential(conv, bn, ReLU(inplace=True))        container, in-place activation
    block           Residual block:
      block.conv1, block.bn1, block.act (ReLU inplace, CALLED TWICE: after bn1 and after the residual add),
      block.conv2, block.bn2
    down            Sequential(conv stride 2, ReLU(inplace=True))
    pool            AdaptiveAvgPool2d(2)
    head            Sequential(Flatten, Linear, BatchNorm1d)          -> (N, embedding_size) embedding

It works for any input size >= 4 (the contract says 16 or 32). BatchNorm running statistics are randomised
so that they are not the identity.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from froq_ray.imaging.contract import InputContract
from froq_ray.models.base import LoadedModel, freeze
from froq_ray.quality.artifact import CalibrationArtifact, CalibrationSet
from froq_ray.quality.observer import network_input


class TinyBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y += x  # in-place add on bn2's output
        return self.act(y)


class TinyFR(nn.Module):
    def __init__(self, embedding_size: int = 8, width: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.block = TinyBlock(width)
        self.down = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(width * 4, embedding_size), nn.BatchNorm1d(embedding_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.down(self.block(self.stem(x)))))


def _randomise_batchnorm(network: nn.Module, generator: torch.Generator) -> None:
    for module in network.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))


def state_sha256(network: nn.Module) -> str:
    """A stand-in for the weights-file hash: sha256 over the state dict's names and bytes."""
    h = hashlib.sha256()
    for key, value in sorted(network.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def tiny_contract(size: int = 16) -> InputContract:
    return InputContract(size=size, channel_order="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class PoisonedTinyFR(TinyFR):
    """TinyFR that fails like a broken model on one input pattern: a batch holding an image whose network input
    is constant (every pixel and channel equal, e.g. an all-grey uint8 crop) raises ``RuntimeError``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        poisoned = torch.nonzero(flat.amax(dim=1) == flat.amin(dim=1)).flatten()
        if poisoned.numel():
            raise RuntimeError(f"poisoned input at batch rows {poisoned.tolist()}")
        return super().forward(x)


def tiny_fr_model(
    size: int = 16,
    embedding_size: int = 8,
    seed: int = 0,
    name: str = "tiny-fr",
    network_class: type[TinyFR] = TinyFR,
) -> LoadedModel:
    """A frozen, eval-mode TinyFR (or ``network_class``) wrapped as a LoadedModel with an InputContract of
    ``size`` (16 or 32)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = network_class(embedding_size)
    with torch.no_grad():
        _randomise_batchnorm(network, generator)
    freeze(network)
    return LoadedModel(
        name=name,
        family="tiny",
        network=network,
        contract=tiny_contract(size),
        embedding_size=embedding_size,
        weights_path=f"<tiny seed={seed}>",
        weights_sha256=state_sha256(network),
        options={"seed": seed},
    )


def random_crops(count: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """(count, size, size, 3) uint8 crops with some structure (a per-image gradient plus noise)."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = (
        (ramp[None, :, None, None] * ramp[None, None, :, None])
        * 255
        * torch.rand(count, 1, 1, 3, generator=generator)
    )
    noise = (
        torch.rand(count, size, size, 3, generator=generator)
        * 255
        * torch.rand(count, 1, 1, 1, generator=generator)
    )
    return (0.5 * base + 0.5 * noise).clamp(0, 255).to(torch.uint8).numpy()


def manual_activations(network: TinyFR, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every module's output(s) for input ``x``, computed by an explicit re-implementation of
    ``TinyFR.forward`` with functional ops (no hooks), each output cloned at the moment it is produced.

    Independent ground truth for hook-based observers: name -> one tensor per call, in call order.
    """
    out: dict[str, list[torch.Tensor]] = {}

    def keep(name: str, value: torch.Tensor) -> torch.Tensor:
        out.setdefault(name, []).append(value.detach().clone())
        return value

    def bn(module: nn.Module, value: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            value,
            module.running_mean,
            module.running_var,
            module.weight,
            module.bias,
            training=False,
            eps=module.eps,
        )

    with torch.no_grad():
        stem, block, down, head = network.stem, network.block, network.down, network.head
        h = keep("stem.0", F.conv2d(x, stem[0].weight, stem[0].bias, padding=1))
        h = keep("stem.1", bn(stem[1], h))
        h = keep("stem.2", torch.clamp(h, min=0))
        keep("stem", h)
        y = keep("block.conv1", F.conv2d(h, block.conv1.weight, padding=1))
        y = keep("block.bn1", bn(block.bn1, y))
        y = keep("block.act", torch.clamp(y, min=0))
        y = keep("block.conv2", F.conv2d(y, block.conv2.weight, padding=1))
        y = keep("block.bn2", bn(block.bn2, y))
        y = keep("block.act", torch.clamp(y + h, min=0))
        h = keep("block", y)
        h = keep("down.0", F.conv2d(h, down[0].weight, down[0].bias, stride=2, padding=1))
        h = keep("down.1", torch.clamp(h, min=0))
        keep("down", h)
        h = keep("pool", F.adaptive_avg_pool2d(h, 2))
        h = keep("head.0", h.flatten(1))
        h = keep("head.1", F.linear(h, head[1].weight, head[1].bias))
        h = keep("head.2", bn(head[2], h))
        keep("head", h)
    return out


def flat_norms(tensor: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N,) float64 L2 norms, the plain way (for comparisons)."""
    return tensor.double().reshape(tensor.shape[0], -1).norm(dim=1)


# The layers the FroqScorer tests select: an in-place activation called twice (block.act: the last call counts),
# a module whose output is modified in place afterwards (block.bn2), a container (stem).
SCORER_LAYERS = ["block.act", "block.bn2", "stem"]


def scorer_truth(
    model: LoadedModel, crops: np.ndarray, selected: list[str] = SCORER_LAYERS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What FroqScorer must give for (N, size, size, 3) uint8 ``crops``, from :func:`manual_activations` (no
    hooks): the (L, N) float64 norms of each selected layer's LAST call, their (N,) mean (the quality), and the
    (N, embedding_size) float32 embedding."""
    x = network_input(crops, model.input_transform(), torch.device("cpu"))
    acts = manual_activations(model.network, x)
    norms = torch.stack([flat_norms(acts[name][-1]) for name in selected])
    return norms.numpy(), norms.mean(dim=0).numpy(), acts["head"][0].numpy()


def hand_artifact(model: LoadedModel, selected: list[str]) -> CalibrationArtifact:
    """A valid artifact for ``model`` selecting ``selected`` (utilities and curve are made up, decreasing)."""

    names = [n for n, _ in model.network.named_modules() if n]
    utilities = {n: (0.9 - 0.01 * selected.index(n)) if n in selected else 0.1 for n in names}
    curve = [(n, 0.9 + 0.001 * i) for i, n in enumerate(selected)]
    return CalibrationArtifact(
        model=model.identity(),
        utilities=utilities,
        layer_calls={n: 1 for n in names},
        top_layers=list(selected),
        greedy_curve=curve,
        selected_layers=list(selected),
        settings={"perturbations": {}, "top_n": len(selected)},
        calibration_set=CalibrationSet("0" * 64, "sorted_image_ids", 3),
        precision="fp32",
    )


def tiny_network_input(model: LoadedModel, count: int, seed: int) -> torch.Tensor:
    """``random_crops(count, <contract size>, seed)`` as the model's (count, 3, size, size) float32 CPU input."""
    return network_input(
        random_crops(count, model.contract.size, seed), model.input_transform(), torch.device("cpu")
    )


@pytest.fixture(scope="module", name="model")
def tiny_model_fixture() -> LoadedModel:
    """Fixture ``model``: ``tiny_fr_model(size=16)``, built once per test module that imports this function."""
    return tiny_fr_model(size=16)
