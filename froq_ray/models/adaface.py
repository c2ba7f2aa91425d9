"""AdaFace IR-18/50/101 with the key layout of mk-minchul/AdaFace ``net.py`` (Lightning ``.ckpt`` files).

Layout (facts from the public repository): ``input_layer`` = (3x3 conv 3->64, BN, PReLU); ``body`` = a flat
sequence of :class:`BasicBlockIR` units over four stages of widths 64/128/256/512 (units per stage:
IR-18 2/2/2/2, IR-50 3/4/14/3, IR-101 3/13/30/3), the first unit of each stage with stride 2;
``output_layer`` = (BN2d 512, Dropout, Flatten, Linear 512*7*7 -> 512, BN1d 512 without affine).
A unit is ``res_layer`` = (BN, 3x3 conv, BN, PReLU, 3x3 conv carrying the stride, BN) plus ``shortcut_layer``:
``MaxPool2d(1, stride)`` (pure subsampling, no weights) when the width is unchanged, else (1x1 conv with the
stride, BN).

Checkpoints are PyTorch Lightning ``.ckpt`` files: a dict whose ``state_dict`` holds the backbone under
``model.`` and the margin head under ``head.`` (dropped here); a bare backbone state dict is accepted too.

Output: upstream's ``forward`` returns ``(x / ||x||, ||x||)``; here the network returns ``x`` itself (the
unnormalised 512-d feature, whose norm is AdaFace's quality proxy), so every family returns one embedding
tensor. Cosine similarities are unchanged.

Input: AdaFace was trained on BGR images scaled to [-1, 1]. ``options={"channel_permutation": "reference"}``
instead reproduces the FROQ reference code, which permutes RGB channels with ``[2, 0, 1]`` (B, R, G order).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import InputContract, LoadedModel, ModelLoadError, checkpoint_model, read_checkpoint, strip_prefix
from .registry import Factory, register_model

EMBEDDING_SIZE = 512
STAGE_WIDTHS = (64, 128, 256, 512)
FINAL_MAP = 7  # 112 / 2**4
DROPOUT = 0.4  # upstream training value; inactive in eval mode

# name -> units per stage (upstream's num_layers 18, 50 and 100; "IR-101" is num_layers=100).
ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {
    "adaface_ir18": (2, 2, 2, 2),
    "adaface_ir50": (3, 4, 14, 3),
    "adaface_ir101": (3, 13, 30, 3),
}

# channel_permutation option -> network channel order. "reference" = the FROQ reference's x[:, [2, 0, 1]] on RGB.
CHANNEL_ORDERS = {"bgr": "BGR", "reference": "BRG"}
DEFAULT_PERMUTATION = "bgr"

BACKBONE_PREFIX = "model."
HEAD_PREFIX = "head."

# PyTorch Lightning stores ``hyper_parameters`` as an AttributeDict (a plain dict subclass with attribute
# access). weights_only loading refuses unknown classes; these names are mapped to ``dict`` itself, which is
# safe: no Lightning code runs and the result is an ordinary dict.
LIGHTNING_DICT_CLASSES = (
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
)


class BasicBlockIR(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if in_ch == out_ch:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def build_body(units_per_stage: tuple[int, int, int, int]) -> nn.Sequential:
    units: list[nn.Module] = []
    in_ch = STAGE_WIDTHS[0]
    for width, count in zip(STAGE_WIDTHS, units_per_stage, strict=True):
        for i in range(count):
            units.append(BasicBlockIR(in_ch, width, 2 if i == 0 else 1))
            in_ch = width
    return nn.Sequential(*units)


class AdaFaceBackbone(nn.Module):
    """112x112 input in [-1, 1] (BGR) -> unnormalised 512-d embedding."""

    def __init__(self, units_per_stage: tuple[int, int, int, int]) -> None:
        super().__init__()
        width = STAGE_WIDTHS[-1]
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, STAGE_WIDTHS[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(STAGE_WIDTHS[0]),
            nn.PReLU(STAGE_WIDTHS[0]),
        )
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Dropout(DROPOUT),
            nn.Flatten(),
            nn.Linear(width * FINAL_MAP * FINAL_MAP, EMBEDDING_SIZE),
            nn.BatchNorm1d(EMBEDDING_SIZE, affine=False),
        )
        self.body = build_body(units_per_stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


def contract_for(options: Mapping[str, Any]) -> InputContract:
    unknown = sorted(set(options) - {"channel_permutation"})
    if unknown:
        raise ModelLoadError(f"unknown AdaFace option(s) {unknown}; known: ['channel_permutation']")
    permutation = options.get("channel_permutation", DEFAULT_PERMUTATION)
    if not isinstance(permutation, str) or permutation not in CHANNEL_ORDERS:
        raise ModelLoadError(
            f"AdaFace option channel_permutation must be one of {sorted(CHANNEL_ORDERS)} "
            f"('bgr': the order AdaFace was trained on; 'reference': the FROQ reference's [2, 0, 1] permutation "
            f"of RGB), got {permutation!r}"
        )
    return InputContract(
        size=112, channel_order=CHANNEL_ORDERS[permutation], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )


def read_lightning_checkpoint(path: str) -> dict[str, Any]:
    """Read a ``.ckpt`` with weights_only=True, accepting Lightning's AttributeDict; explain other refusals."""
    with torch.serialization.safe_globals([(dict, name) for name in LIGHTNING_DICT_CLASSES]):
        try:
            return read_checkpoint(path)
        except ModelLoadError as exc:
            unsafe = _unsafe_globals(path)
            if not unsafe:
                raise
            raise ModelLoadError(
                f"checkpoint {path} stores Python objects that weights-only loading refuses: {unsafe}. "
                "Only tensors and plain containers can be read safely; re-save the weights, e.g. "
                "torch.save({'state_dict': ckpt['state_dict']}, path) in a trusted environment"
            ) from exc


def _unsafe_globals(path: str) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - legacy or corrupt file: keep read_checkpoint's own message
        return []


def backbone_state(checkpoint: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors: ``state_dict`` entries under ``model.`` (Lightning) or a bare state dict."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict):
        raise ModelLoadError(
            f"checkpoint {path}: 'state_dict' holds a {type(state).__name__}, expected a dict"
        )
    if any(k.startswith(BACKBONE_PREFIX) for k in state):
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
        return strip_prefix(state, BACKBONE_PREFIX)
    return strip_prefix(state, "module.")


def _factory(name: str, units_per_stage: tuple[int, int, int, int]) -> Factory:
    def load(weights: str, options: dict[str, Any]) -> LoadedModel:
        contract = contract_for(options)
        return checkpoint_model(
            name=name,
            family="adaface",
            network=AdaFaceBackbone(units_per_stage),
            state=backbone_state(read_lightning_checkpoint(weights), weights),
            weights=weights,
            contract=contract,
            embedding_size=EMBEDDING_SIZE,
            options=options,
            what=f"AdaFace {name} ({Path(weights).name})",
        )

    load.__name__ = f"load_{name}"
    return register_model(
        name,
        family="adaface",
        needs_weights=True,
        weights_hint="an AdaFace Lightning .ckpt",
        description=f"AdaFace {name.split('_')[1].upper()} (Lightning .ckpt), 112x112 BGR, mean/std 0.5, 512-d; "
        "option channel_permutation: bgr (default) | reference",
    )(load)


LOADERS = {name: _factory(name, units) for name, units in ARCHITECTURES.items()}
