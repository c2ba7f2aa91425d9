"""IResNet r18/r34/r50/r100/r200 with the key layout of InsightFace arcface_torch ``backbone.pth`` files.

Layout (facts from deepinsight/insightface ``recognition/arcface_torch/backbones/iresnet.py``):
stem ``conv1`` (3x3, 3->64, stride 1) -> ``bn1`` -> ``prelu``; four stages ``layer1..layer4`` of
:class:`IBasicBlock` with widths 64/128/256/512, each stage halving the resolution in its first block
(112 -> 56 -> 28 -> 14 -> 7); then ``bn2`` (2d) -> flatten -> ``dropout`` -> ``fc`` (512*7*7 -> 512) ->
``features`` (BatchNorm1d). A block is ``bn1 -> conv1 (3x3) -> bn2 -> prelu -> conv2 (3x3, carries the
stride) -> bn3`` plus the shortcut, which is ``downsample`` = (1x1 conv with the stride, BN) when the shape
changes. Checkpoints saved from DataParallel/DDP (``module.`` prefix) are accepted.

Difference from upstream that a hook can see: upstream adds the shortcut in place (``out += identity``), which
overwrites the tensor ``bn3``'s forward hook received. Here the add is out of place, so a hook on ``bn3`` sees
bn3's real output. Outputs are identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import InputContract, LoadedModel, checkpoint_model, read_checkpoint, refuse_options, strip_prefix
from .registry import Factory, register_model

EMBEDDING_SIZE = 512
CONTRACT = InputContract(size=112, channel_order="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
STAGE_WIDTHS = (64, 128, 256, 512)
FINAL_MAP = 7  # 112 / 2**4

# Blocks per stage for each depth (arcface_torch r18..r200).
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block of IResNet; the stride sits on ``conv2``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                nn.BatchNorm2d(out_ch, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(x)
        out = self.prelu(self.bn2(self.conv1(out)))
        out = self.bn3(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def make_stage(in_ch: int, out_ch: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(
        *(IBasicBlock(in_ch if i == 0 else out_ch, out_ch, 2 if i == 0 else 1) for i in range(blocks))
    )


class IResNet(nn.Module):
    """112x112 input in [-1, 1] -> 512-d embedding (not unit length)."""

    layer1: nn.Sequential  # the four stages, added by name in __init__ (upstream's module names)
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self, blocks_per_stage: tuple[int, int, int, int], embedding_size: int = EMBEDDING_SIZE
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=1e-5)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        in_ch = STAGE_WIDTHS[0]
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage, strict=True), start=1):
            self.add_module(f"layer{index}", make_stage(in_ch, width, blocks))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)  # upstream's default; present so module names match
        self.fc = nn.Linear(in_ch * FINAL_MAP * FINAL_MAP, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def build_iresnet(depth: int) -> IResNet:
    if depth not in DEPTHS:
        raise ValueError(f"IResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
    return IResNet(DEPTHS[depth])


def _factory(depth: int) -> Factory:
    name = f"iresnet{depth}"

    def load(weights: str, options: dict[str, Any]) -> LoadedModel:
        refuse_options(name, options)
        return checkpoint_model(
            name=name,
            family="iresnet",
            network=build_iresnet(depth),
            state=strip_prefix(read_checkpoint(weights), "module."),
            weights=weights,
            contract=CONTRACT,
            embedding_size=EMBEDDING_SIZE,
            what=f"IResNet-{depth} ({weights})",
        )

    load.__name__ = f"load_{name}"
    return register_model(
        name,
        family="iresnet",
        needs_weights=True,
        weights_hint="an arcface_torch backbone.pth",
        description=f"InsightFace arcface_torch IResNet-{depth} (backbone.pth), 112x112 RGB, mean/std 0.5, 512-d",
    )(load)


LOADERS = {depth: _factory(depth) for depth in DEPTHS}
