"""MobileFaceNet (128-d) with the module layout of the public foamliu/MobileFaceNet state dicts.

The module tree is written so that ``state_dict()`` keys equal the checkpoint's keys one for one (307 entries
for the test asset), and so that ``named_modules()`` yields the same names, in the same order, as upstream:
FROQ observes modules by name, so the tree is part of the contract.

Upstream quirks kept on purpose (they change what a forward hook sees):

* ``dw_conv.relu`` is ONE ``nn.ReLU`` object applied twice (after ``bn1`` and after ``bn2``): a forward hook on
  it fires twice per forward pass, first with the depthwise branch's activation (64x56x56), then with the
  pointwise one (same shape). An observer must decide which call it keeps.
* Every ReLU6 is ``inplace=True``: the ReLU6 overwrites its input, so the output a hook receives on the
  preceding BatchNorm is later clamped in place. A hook that keeps a tensor (rather than reducing it at once)
  must ``clone()`` it.

Facts: ``../shared/models/mobilefacenet/PROVENANCE.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import InputContract, LoadedModel, checkpoint_model, read_checkpoint, refuse_options, strip_prefix
from .registry import register_model

EMBEDDING_SIZE = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTRACT = InputContract(
    size=112, channel_order="RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD, alignment="arcface112"
)

# MobileNetV2-style stages: (expansion t, output channels c, repeats n, stride of the first block s).
STAGE_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


def conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int, *, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> in-place ReLU6, as ``<name>.0`` / ``.1`` / ``.2``."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 -> bn1 -> relu -> pointwise 1x1 -> bn2 -> relu, with ONE shared ``relu`` module."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()  # called twice per forward pass (upstream layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class GlobalDepthwiseConv(nn.Module):
    """7x7 depthwise conv over the whole 7x7 map (no padding) -> BatchNorm: the GDC pooling of MobileFaceNet."""

    def __init__(self, channels: int, kernel: int = 7) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.depthwise(x))


class InvertedResidual(nn.Module):
    """1x1 expand (``conv.0``) -> 3x3 depthwise (``conv.1``) -> 1x1 project (``conv.2``) -> BN (``conv.3``).

    The residual is added when the block keeps resolution and width.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            conv_bn_relu6(in_ch, hidden, 1, 1),
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def build_features(in_ch: int) -> tuple[nn.Sequential, int]:
    blocks: list[nn.Module] = []
    for expansion, out_ch, repeats, first_stride in STAGE_SETTINGS:
        for i in range(repeats):
            blocks.append(InvertedResidual(in_ch, out_ch, first_stride if i == 0 else 1, expansion))
            in_ch = out_ch
    return nn.Sequential(*blocks), in_ch


class MobileFaceNet(nn.Module):
    """112x112 RGB -> 128-d embedding (not unit length)."""

    def __init__(self, embedding_size: int = EMBEDDING_SIZE) -> None:
        super().__init__()
        # Registration order follows upstream (features last), so named_modules() order matches it too.
        self.conv1 = conv_bn_relu6(3, 64, 3, 2)
        self.dw_conv = DepthwiseSeparableConv(64)
        features, feat_ch = build_features(64)
        self.conv2 = conv_bn_relu6(feat_ch, 512, 1, 1)
        self.gdconv = GlobalDepthwiseConv(512)
        self.conv3 = nn.Conv2d(512, embedding_size, 1, bias=True)
        self.bn = nn.BatchNorm2d(embedding_size)
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_conv(self.conv1(x))
        x = self.features(x)
        x = self.gdconv(self.conv2(x))
        x = self.bn(self.conv3(x))
        return torch.flatten(x, 1)


@register_model(
    "mobilefacenet",
    family="mobilefacenet",
    needs_weights=True,
    weights_hint="a foamliu/MobileFaceNet state dict",
    description="MobileFaceNet 128-d (foamliu/MobileFaceNet state dict), 112x112 RGB, ImageNet mean/std",
)
def load_mobilefacenet(weights: str, options: dict[str, Any]) -> LoadedModel:
    refuse_options("mobilefacenet", options)
    return checkpoint_model(
        name="mobilefacenet",
        family="mobilefacenet",
        network=MobileFaceNet(),
        state=strip_prefix(read_checkpoint(weights), "module."),
        weights=weights,
        contract=CONTRACT,
        embedding_size=EMBEDDING_SIZE,
        what=f"MobileFaceNet ({weights})",
    )
