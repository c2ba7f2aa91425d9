"""Model contract shared by every face-recognition family in the zoo.

A family module builds an ``nn.Module`` and a checkpoint loader; this module holds what they share:
the input contract (how uint8 crops become network input), the loaded-model record, checkpoint reading
that never unpickles arbitrary objects, and strict state-dict loading with errors a user can act on.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import UserError
from ..imaging.contract import InputContract
from ..imaging.prepare import ModelInputTransform


class ModelLoadError(UserError, RuntimeError):
    """A model or checkpoint cannot be loaded; the message names the file and the problem."""


@dataclass
class LoadedModel:
    """A frozen FR network ready for inference, with everything needed to identify it."""

    name: str
    family: str
    network: nn.Module
    contract: InputContract
    embedding_size: int
    weights_path: str
    weights_sha256: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.weights_sha256[:12]}"

    def input_transform(self, source_size: int = 112) -> ModelInputTransform:
        return ModelInputTransform(self.contract, source_size)

    def identity(self) -> dict[str, Any]:
        """What an artifact records to refuse being applied to another model."""
        return {
            "name": self.name,
            "family": self.family,
            "weights_sha256": self.weights_sha256,
            "embedding_size": self.embedding_size,
            "options": dict(self.options),
            "input_contract": self.contract.to_dict(),
        }


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint on the CPU without unpickling arbitrary objects."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"model weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ModelLoadError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ModelLoadError(f"checkpoint {path} holds a {type(obj).__name__}, expected a state dict")
    return obj


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from keys that carry it (e.g. ``module.`` from DataParallel checkpoints)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_state_strict(network: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``network`` or raise naming missing, unexpected and mis-shaped keys."""
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise ModelLoadError(f"checkpoint does not fit {what}: " + "; ".join(parts))
    network.load_state_dict(state, strict=True)


def refuse_options(name: str, options: dict[str, Any]) -> None:
    """:class:`ModelLoadError` when a model that takes no options got some (named, sorted)."""
    if options:
        raise ModelLoadError(f"model {name!r} takes no options, got {sorted(options)}")


def checkpoint_model(
    *,
    name: str,
    family: str,
    network: nn.Module,
    state: dict[str, torch.Tensor],
    weights: str,
    contract: InputContract,
    embedding_size: int,
    options: dict[str, Any] | None = None,
    what: str | None = None,
) -> LoadedModel:
    """``network`` with ``state`` loaded strictly (:func:`load_state_strict`; ``what`` names it in the error,
    default ``"<name> (<weights>)"``), frozen, identified by the sha256 of the ``weights`` file."""
    load_state_strict(network, state, what or f"{name} ({weights})")
    return LoadedModel(
        name=name,
        family=family,
        network=freeze(network),
        contract=contract,
        embedding_size=embedding_size,
        weights_path=str(weights),
        weights_sha256=sha256_file(weights),
        options=dict(options or {}),
    )


_Network = TypeVar("_Network", bound=nn.Module)


def freeze(network: _Network) -> _Network:
    """``network`` in eval mode with every parameter's ``requires_grad`` off (the same object, returned)."""
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network
