"""PyTorch port of dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``): the built-in
default model.

Architecture (dlib's ``dnn_face_recognition_ex``), input side first::

    stem    conv 7x7/2 (32) -> affine -> relu -> max_pool 3x3/2                  150 -> 72 -> 35
    stage1  3 x unit(32)                                                         35
    stage2  unit_down(64)  + 3 x unit(64)                                        17
    stage3  unit_down(128) + 2 x unit(128)                                       8
    stage4  unit_down(256) + 2 x unit(256)                                       4
    stage5  unit_down(256)                                                       2
    pool    global average -> fc 256 -> 128 (no bias)

``unit`` = relu(x + affine(conv(relu(affine(conv(x)))))); ``unit_down`` uses a stride-2 first convolution and
adds a 2x2/2 average pool of ``x``. ``affine`` is batch norm folded into a per-channel scale and shift.
dlib pads a convolution by ``k // 2`` only when its stride is 1 (stride-2 layers are unpadded), and its
``add_prev`` adds tensors of different shapes by zero-padding the smaller one at the end of the channel,
row and column axes (stage4's first unit adds a 3x3 block output to a 4x4 pooled input, for instance).
The loader checks every layer's serialised kernel, stride and padding against this module.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..imaging.contract import InputContract
from .base import (
    LoadedModel,
    ModelLoadError,
    freeze,
    load_state_strict,
    read_checkpoint,
    refuse_options,
    sha256_file,
)
from .dlib_dat import DlibLayer, DlibNetwork, read_dlib_dat
from .registry import register_model

MODEL_NAME = "dlib_resnet_v1"
BUILTIN_PACKAGE = "face_recognition_models"
BUILTIN_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
BUILTIN_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
EMBEDDING_SIZE = 128
INPUT_SIZE = 150
MEAN_RGB_PIXELS = (122.782, 117.001, 104.298)

CONTRACT = InputContract(
    size=INPUT_SIZE,
    channel_order="RGB",
    mean=(MEAN_RGB_PIXELS[0] / 255.0, MEAN_RGB_PIXELS[1] / 255.0, MEAN_RGB_PIXELS[2] / 255.0),
    std=(256.0 / 255.0,) * 3,
    alignment="dlib_chip150",
)

# (name, channels, first unit downsamples, number of units)
STAGES: tuple[tuple[str, int, bool, int], ...] = (
    ("stage1", 32, False, 3),
    ("stage2", 64, True, 4),
    ("stage3", 128, True, 3),
    ("stage4", 256, True, 3),
    ("stage5", 256, True, 1),
)
STEM_CHANNELS = 32


def dlib_conv(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Conv2d:
    """A convolution with dlib's default padding: ``kernel // 2`` at stride 1, none otherwise."""
    padding = kernel // 2 if stride == 1 else 0
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=True)


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` where a missing channel, row or column of either is taken as zero (dlib's add_prev)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ChannelAffine(nn.Module):
    """Per-channel ``x * weight + bias`` (dlib's ``affine`` layer in conv mode)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class GlobalAvgPool(nn.Module):
    """Mean over rows and columns: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Stem(nn.Module):
    def __init__(self, channels: int = STEM_CHANNELS) -> None:
        super().__init__()
        self.conv = dlib_conv(3, channels, 7, 2)
        self.affine = ChannelAffine(channels)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.affine(self.conv(x))))


class ResidualUnit(nn.Module):
    """dlib's ``ares`` (``downsample=False``) or ``ares_down`` (stride-2 block + avg-pooled shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = dlib_conv(in_channels, out_channels, 3, stride)
        self.affine1 = ChannelAffine(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = dlib_conv(out_channels, out_channels, 3, 1)
        self.affine2 = ChannelAffine(out_channels)
        self.shortcut = nn.AvgPool2d(2, stride=2, padding=0) if downsample else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(self.relu1(self.affine1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(add_zero_padded(y, skip))


class DlibResNet(nn.Module):
    """dlib's 29-convolution face recognition ResNet; input (N, 3, 150, 150) normalised, output (N, 128)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem()
        channels = STEM_CHANNELS
        for name, width, downsample, count in STAGES:
            units = [ResidualUnit(channels, width, downsample)]
            units += [ResidualUnit(width, width, False) for _ in range(count - 1)]
            self.add_module(name, nn.Sequential(*units))
            channels = width
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(channels, EMBEDDING_SIZE, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name, *_ in STAGES:
            x = getattr(self, name)(x)
        return self.fc(self.pool(x))


# ---------------------------------------------------------------------------------------------------
# Mapping the parsed .dat layers onto the module.


@dataclass(frozen=True)
class PlanStep:
    """One dlib layer the port expects: its kind, the module that plays it, and the number of tag/skip
    wrappers before it."""

    kind: str
    name: str
    module: nn.Module | None
    wiring_before: int = 0


def layer_plan(network: DlibResNet) -> list[PlanStep]:
    """The dlib layer sequence (input side first) that ``network`` implements."""
    stem = network.stem
    plan = [
        PlanStep("con", "stem.conv", stem.conv),
        PlanStep("affine", "stem.affine", stem.affine),
        PlanStep("relu", "stem.relu", stem.relu),
        PlanStep("max_pool", "stem.pool", stem.pool),
    ]
    for stage_name, *_ in STAGES:
        for index, unit in enumerate(getattr(network, stage_name)):
            prefix = f"{stage_name}.{index}"
            plan += [
                PlanStep("con", f"{prefix}.conv1", unit.conv1, wiring_before=1),  # tag1
                PlanStep("affine", f"{prefix}.affine1", unit.affine1),
                PlanStep("relu", f"{prefix}.relu1", unit.relu1),
                PlanStep("con", f"{prefix}.conv2", unit.conv2),
                PlanStep("affine", f"{prefix}.affine2", unit.affine2),
            ]
            if unit.shortcut is not None:  # tag2, skip1, then the pool of the unit's input
                plan.append(PlanStep("avg_pool", f"{prefix}.shortcut", unit.shortcut, wiring_before=2))
            plan += [
                PlanStep("add_prev", f"{prefix}.add", None),
                PlanStep("relu", f"{prefix}.relu", unit.relu),
            ]
    plan += [PlanStep("avg_pool", "pool", network.pool), PlanStep("fc", "fc", network.fc)]
    return plan


def _expect(step: PlanStep, layer: DlibLayer, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    if found != wanted:
        raise ModelLoadError(
            f"dlib layer at byte {layer.offset} ({layer.version}) does not fit {step.name}: "
            f"file has {found}, the port expects {wanted}"
        )


def _window_settings(layer: DlibLayer) -> dict[str, Any]:
    s = layer.settings
    return {
        "kernel": (s["nr"], s["nc"]),
        "stride": (s["stride_y"], s["stride_x"]),
        "padding": (s["padding_y"], s["padding_x"]),
    }


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _params(layer: DlibLayer) -> np.ndarray:
    """The layer's parameter array; raises :class:`ModelLoadError` for a layer stored without one."""
    if layer.params is None:
        raise ModelLoadError(f"dlib {layer.kind} layer at byte {layer.offset} holds no parameters")
    return layer.params


def _tensor(values: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values.reshape(shape), dtype=np.float32))


def _con_state(step: PlanStep, layer: DlibLayer) -> dict[str, torch.Tensor]:
    conv = step.module
    assert isinstance(conv, nn.Conv2d) and not isinstance(conv.padding, str)  # the port pads by numbers
    found = {"filters": layer.settings["num_filters"], **_window_settings(layer)}
    wanted = {
        "filters": conv.out_channels,
        "kernel": _pair(conv.kernel_size),
        "stride": _pair(conv.stride),
        "padding": _pair(conv.padding),
    }
    _expect(step, layer, found, wanted)
    weight_shape = tuple(conv.weight.shape)
    n_weights = int(np.prod(weight_shape))
    params = _params(layer)
    _expect(step, layer, {"params": params.size}, {"params": n_weights + conv.out_channels})
    return {
        "weight": _tensor(params[:n_weights], weight_shape),
        "bias": _tensor(params[n_weights:], (conv.out_channels,)),
    }


def _affine_state(step: PlanStep, layer: DlibLayer) -> dict[str, torch.Tensor]:
    affine = step.module
    assert isinstance(affine, ChannelAffine)
    channels = affine.weight.numel()
    params = _params(layer)
    _expect(
        step,
        layer,
        {"mode": layer.settings["mode"], "disabled": layer.settings["disabled"], "params": params.size},
        {"mode": 0, "disabled": False, "params": 2 * channels},
    )
    return {
        "weight": _tensor(params[:channels], (channels,)),
        "bias": _tensor(params[channels:], (channels,)),
    }


def _fc_state(step: PlanStep, layer: DlibLayer) -> dict[str, torch.Tensor]:
    fc = step.module
    assert isinstance(fc, nn.Linear)
    s = layer.settings
    params = _params(layer)
    _expect(
        step,
        layer,
        {
            "inputs": s["num_inputs"],
            "outputs": s["num_outputs"],
            "bias": s["has_bias"],
            "params": params.size,
        },
        {
            "inputs": fc.in_features,
            "outputs": fc.out_features,
            "bias": False,
            "params": fc.in_features * fc.out_features,
        },
    )
    # dlib stores the matrix as (inputs, outputs); torch's Linear holds (outputs, inputs).
    return {"weight": _tensor(params, (fc.in_features, fc.out_features)).t().contiguous()}


def _pool_check(step: PlanStep, layer: DlibLayer) -> None:
    if isinstance(step.module, GlobalAvgPool):
        wanted = {"kernel": (0, 0), "stride": (1, 1), "padding": (0, 0)}  # nr = nc = 0: the whole image
    else:
        pool = step.module
        assert isinstance(pool, (nn.MaxPool2d, nn.AvgPool2d))
        wanted = {
            "kernel": _pair(pool.kernel_size),
            "stride": _pair(pool.stride),
            "padding": _pair(pool.padding),
        }
    _expect(step, layer, _window_settings(layer), wanted)


def state_from_dat(network: DlibResNet, parsed: DlibNetwork) -> dict[str, torch.Tensor]:
    """A full state dict for ``network`` from a parsed ``.dat`` file, checking every layer's kind, wiring,
    sizes, strides and paddings against the port."""
    plan = layer_plan(network)
    found_kinds, wanted_kinds = parsed.kinds(), [step.kind for step in plan]
    if found_kinds != wanted_kinds:
        raise ModelLoadError(
            f"the dlib file holds a different network: {len(found_kinds)} layers "
            f"({_first_difference(found_kinds, wanted_kinds)}); expected dlib's face recognition ResNet"
        )
    state: dict[str, torch.Tensor] = {}
    for step, layer in zip(plan, parsed.layers, strict=True):
        if layer.wiring_before != step.wiring_before:
            raise ModelLoadError(
                f"dlib layer at byte {layer.offset} has {layer.wiring_before} tag/skip wrappers "
                f"before it, {step.name} expects {step.wiring_before}: different residual wiring"
            )
        if step.kind == "con":
            tensors = _con_state(step, layer)
        elif step.kind == "affine":
            tensors = _affine_state(step, layer)
        elif step.kind == "fc":
            tensors = _fc_state(step, layer)
        else:
            if step.kind in ("max_pool", "avg_pool"):
                _pool_check(step, layer)
            elif step.kind == "relu" and layer.settings["disabled"]:
                raise ModelLoadError(f"dlib relu at byte {layer.offset} is disabled; {step.name} is not")
            tensors = {}
        state.update({f"{step.name}.{key}": value for key, value in tensors.items()})
    return state


def _first_difference(found: list[str], wanted: list[str]) -> str:
    # strict=False: the lengths differ when one network is a prefix of the other (reported after the loop)
    for index, (a, b) in enumerate(zip(found, wanted, strict=False)):
        if a != b:
            return f"layer {index} is {a!r} where {b!r} was expected"
    return f"expected {len(wanted)} layers"


def _check_input(parsed: DlibNetwork) -> None:
    net_input = parsed.input
    size = (net_input.get("nr"), net_input.get("nc"))
    means = net_input["mean_rgb"]
    if (
        size != (INPUT_SIZE, INPUT_SIZE)
        or len(means) != len(MEAN_RGB_PIXELS)
        or any(abs(a - b) > 1e-3 for a, b in zip(means, MEAN_RGB_PIXELS, strict=True))
    ):
        raise ModelLoadError(
            f"dlib input layer {net_input} does not match the contract "
            f"({INPUT_SIZE}x{INPUT_SIZE}, mean RGB {MEAN_RGB_PIXELS})"
        )


# ---------------------------------------------------------------------------------------------------
# Loading.


def builtin_weights_path() -> str:
    """The ``.dat`` file shipped by the ``face-recognition-models`` package (found without importing it:
    its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the built-in dlib model needs the package face-recognition-models "
            f"(pip install face-recognition-models); {BUILTIN_PACKAGE} is not installed"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), "models", BUILTIN_FILENAME)
    if not os.path.isfile(path):
        raise ModelLoadError(f"face-recognition-models is installed but {path} is missing")
    return path


def build_dlib_resnet(weights_path: str) -> DlibResNet:
    """A frozen :class:`DlibResNet` with weights from a dlib ``.dat`` file or a torch state dict."""
    network = DlibResNet()
    if weights_path.endswith(".dat"):
        parsed = read_dlib_dat(weights_path)
        _check_input(parsed)
        state = state_from_dat(network, parsed)
    else:
        state = read_checkpoint(weights_path)
    load_state_strict(network, state, f"{MODEL_NAME} ({weights_path})")
    return freeze(network)


@register_model(
    MODEL_NAME,
    family="dlib",
    needs_weights=False,
    description=(
        "dlib's face recognition ResNet (29 conv, 128-d, LFW 99.38%) ported to PyTorch; built-in weights "
        "from face-recognition-models; 150x150 dlib chips, warped from 112x112 ArcFace crops"
    ),
)
def load_dlib_resnet_v1(weights: str | None, options: dict[str, Any]) -> LoadedModel:
    refuse_options(MODEL_NAME, options)
    path = weights or builtin_weights_path()
    digest = sha256_file(path)
    if weights is None and digest != BUILTIN_SHA256:
        raise ModelLoadError(
            f"built-in dlib model {path} has sha256 {digest}, expected {BUILTIN_SHA256}: "
            "reinstall face-recognition-models"
        )
    return LoadedModel(
        name=MODEL_NAME,
        family="dlib",
        network=build_dlib_resnet(path),
        contract=CONTRACT,
        embedding_size=EMBEDDING_SIZE,
        weights_path=path,
        weights_sha256=digest,
        options={},
    )
