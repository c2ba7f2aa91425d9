"""Student networks: small regressors that learn a teacher's face-image quality from the face crop alone.

A student takes the same uint8 ArcFace-aligned RGB crops as the teacher, resized to ``input_size`` and
normalised by :func:`student_contract` (ImageNet mean/std, like MobileFaceNet), and returns one float per
image: the quality in TEACHER units, higher = better. Training works on standardised targets
(``(quality - mean) / std``), so every student ends with a fixed affine de-standardisation held in two
buffers (``target_mean``, ``target_std``, saved with the weights): :meth:`StudentNetwork.forward_standardised`
is what the loss sees, :meth:`StudentNetwork.forward` (and the exported ONNX graph) gives teacher units.

Architectures (``STUDENT_ARCHS``):

* ``tiny_cnn``: four stride-2 conv-BN-ReLU stages (widths w, 2w, 4w, 8w; option ``width``, default 16,
  about 0.1M parameters), global average pooling and a linear output.
* ``mobilefacenet_student``: the MobileFaceNet trunk (``conv1``, ``dw_conv``, ``features``, ``conv2``, built
  from :mod:`froq_ray.models.mobilefacenet`'s blocks, same module names) and a global depthwise conv over the
  final map (7x7 at input 112, 4x4 at 64), then a small MLP (option ``head_hidden``, default 128) to one value.
  Option ``head``: ``mlp`` (default) feeds the MLP the 512 pooled features; ``energy`` also feeds it the log L2
  norm of every trunk stage's output map and of the pooled vector (the quantity FROQ reads from its layers),
  through a BatchNorm (the norms and features live on different scales).
  Option ``init_weights`` (path of the shipped MobileFaceNet state dict) copies every tensor whose name and
  shape match; which were copied and which were skipped is kept in ``network.init_report`` and logged.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from ..imaging.contract import InputContract
from ..models.base import ModelLoadError, read_checkpoint, strip_prefix
from ..models.mobilefacenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DepthwiseSeparableConv,
    GlobalDepthwiseConv,
    build_features,
    conv_bn_relu6,
)

logger = logging.getLogger(__name__)

STUDENT_ARCHS = ("tiny_cnn", "mobilefacenet_student")
MIN_INPUT_SIZE = 32
MAX_INPUT_SIZE = 512
DOWNSAMPLINGS = 4  # both archs halve the resolution four times: 112 -> 7, 64 -> 4


def student_contract(input_size: int) -> InputContract:
    """How crops enter a student: RGB, ImageNet mean/std, ArcFace alignment, ``input_size`` square."""
    return InputContract(
        size=int(input_size),
        channel_order="RGB",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        alignment="arcface112",
    )


def final_map_size(input_size: int) -> int:
    """Side of the last feature map after four stride-2, padding-1 3x3 convolutions (``ceil(n / 2)`` each)."""
    side = input_size
    for _ in range(DOWNSAMPLINGS):
        side = (side + 1) // 2
    return side


class StudentNetwork(nn.Module):
    """Base of every student: float NCHW normalised input -> (N,) quality in teacher units.

    Subclasses implement :meth:`forward_standardised`; ``arch``, ``input_size`` and ``options`` (JSON-able,
    as given to :func:`build_student`) describe how to rebuild the network.
    """

    target_mean: torch.Tensor  # 0-d float32 buffers, teacher units (set_target_scale)
    target_std: torch.Tensor
    arch: str = ""

    def __init__(self, input_size: int, options: dict[str, Any]) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.options = dict(options)
        self.init_report: dict[str, Any] | None = None
        self.register_buffer("target_mean", torch.tensor(0.0, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(1.0, dtype=torch.float32))

    @property
    def contract(self) -> InputContract:
        return student_contract(self.input_size)

    def set_target_scale(self, mean: float, std: float) -> None:
        """Set the de-standardisation: ``forward = forward_standardised * std + mean``."""
        mean, std = float(mean), float(std)
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            raise ValueError(
                f"target scale needs a finite mean and a finite std > 0, got mean={mean}, std={std}"
            )
        with torch.no_grad():
            self.target_mean.fill_(mean)
            self.target_std.fill_(std)

    def forward_standardised(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_standardised(x) * self.target_std + self.target_mean


class TinyCNN(StudentNetwork):
    """Four stride-2 3x3 conv-BN-ReLU stages (w, 2w, 4w, 8w channels) -> global average pool -> linear."""

    arch = "tiny_cnn"

    def __init__(self, input_size: int, options: dict[str, Any], width: int) -> None:
        super().__init__(input_size, options)
        stages: list[nn.Module] = []
        in_ch = 3
        for i in range(DOWNSAMPLINGS):
            out_ch = width * 2**i
            stages.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 3, 2, padding=1, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(inplace=True),
                )
            )
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.output = nn.Linear(in_ch, 1)

    def forward_standardised(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x).mean(dim=(2, 3))
        return self.output(x).flatten()


class MobileFaceNetStudent(StudentNetwork):
    """MobileFaceNet trunk (upstream module names, so its checkpoint can initialise it) + a regression head."""

    arch = "mobilefacenet_student"

    def __init__(self, input_size: int, options: dict[str, Any], head_hidden: int, head: str) -> None:
        super().__init__(input_size, options)
        self.conv1 = conv_bn_relu6(3, 64, 3, 2)
        self.dw_conv = DepthwiseSeparableConv(64)
        features, feat_ch = build_features(64)
        self.features = features
        self.conv2 = conv_bn_relu6(feat_ch, 512, 1, 1)
        self.gdconv = GlobalDepthwiseConv(512, kernel=final_map_size(input_size))
        self.energy = head == "energy"
        inputs = 512
        if self.energy:
            inputs += len(features) + 4  # conv1, dw_conv, every block, conv2, the pooled vector
            self.energy_norm = nn.BatchNorm1d(inputs)
        self.head = nn.Sequential(
            nn.Linear(inputs, head_hidden), nn.ReLU(inplace=True), nn.Linear(head_hidden, 1)
        )

    def forward_standardised(self, x: torch.Tensor) -> torch.Tensor:
        if not self.energy:
            x = self.features(self.dw_conv(self.conv1(x)))
            x = torch.flatten(self.gdconv(self.conv2(x)), 1)
            return self.head(x).flatten()
        x = self.conv1(x)
        norms = [log_l2_norm(x)]
        x = self.dw_conv(x)
        norms.append(log_l2_norm(x))
        for block in self.features:
            x = block(x)
            norms.append(log_l2_norm(x))
        x = self.conv2(x)
        norms.append(log_l2_norm(x))
        pooled = torch.flatten(self.gdconv(x), 1)
        norms.append(log_l2_norm(pooled))
        return self.head(self.energy_norm(torch.cat([*norms, pooled], dim=1))).flatten()


def log_l2_norm(x: torch.Tensor) -> torch.Tensor:
    """(N, 1): log of each sample's L2 norm over all its activations (eps keeps an all-zero map finite).

    ``vector_norm`` over every non-batch dim reads the map once, in any memory layout (no squared copy, no
    flatten copy of a channels_last map): ~20% faster for the 112 px energy student on this CPU."""
    dims = tuple(range(1, x.dim()))
    return 0.5 * torch.log(torch.linalg.vector_norm(x, dim=dims).pow(2) + 1e-6).unsqueeze(1)


# ---------------------------------------------------------------------------------------------- options
ARCH_OPTIONS: dict[str, dict[str, Any]] = {
    "tiny_cnn": {"width": 16},
    "mobilefacenet_student": {"head_hidden": 128, "init_weights": None, "head": "mlp"},
}
MOBILEFACENET_HEADS = ("mlp", "energy")
MAX_WIDTH = 256


def _positive_int(arch: str, name: str, value: Any, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise ValueError(
            f"student {arch!r}: option {name!r} must be an integer in [1, {upper}], got {value!r}"
        )
    return value


def _check_input_size(arch: str, input_size: Any) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        raise TypeError(f"student {arch!r}: input_size must be an integer, got {input_size!r}")
    if not MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE:
        raise ValueError(
            f"student {arch!r}: unsupported input_size {input_size} "
            f"(supported: {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}, e.g. 64 or 112)"
        )
    return input_size


def _merged_options(arch: str, options: dict[str, Any] | None) -> dict[str, Any]:
    allowed = ARCH_OPTIONS[arch]
    given = dict(options or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"student {arch!r}: unknown option(s) {unknown}; allowed options: {sorted(allowed)}")
    return {**allowed, **given}


def build_student(arch: str, input_size: int, options: dict[str, Any] | None = None) -> StudentNetwork:
    """A freshly initialised student (seed with ``torch.manual_seed`` for identical weights).

    Raises ``ValueError`` naming the architecture or option and the allowed values.
    """
    if arch not in STUDENT_ARCHS:
        raise ValueError(f"unknown student arch {arch!r}; allowed: {list(STUDENT_ARCHS)}")
    input_size = _check_input_size(arch, input_size)
    merged = _merged_options(arch, options)
    recorded = dict(options or {})
    if arch == "tiny_cnn":
        width = _positive_int(arch, "width", merged["width"], MAX_WIDTH)
        return TinyCNN(input_size, recorded, width=width)
    head_hidden = _positive_int(arch, "head_hidden", merged["head_hidden"], 4096)
    if merged["head"] not in MOBILEFACENET_HEADS:
        raise ValueError(
            f"student {arch!r}: option 'head' must be one of {list(MOBILEFACENET_HEADS)}, "
            f"got {merged['head']!r}"
        )
    network = MobileFaceNetStudent(input_size, recorded, head_hidden=head_hidden, head=merged["head"])
    init_weights = merged["init_weights"]
    if init_weights is not None:
        if not isinstance(init_weights, str) or not init_weights:
            raise ValueError(
                f"student {arch!r}: option 'init_weights' must be the path of a MobileFaceNet state dict, "
                f"got {init_weights!r}"
            )
        network.init_report = initialise_from_checkpoint(network, init_weights)
    return network


def initialise_from_checkpoint(network: nn.Module, path: str) -> dict[str, Any]:
    """Copy into ``network`` every checkpoint tensor whose name (after ``module.``) and shape match.

    Returns (and logs) a report: ``loaded`` names, ``skipped_shape`` (name: checkpoint vs network shape),
    ``not_in_checkpoint`` (network tensors left as initialised) and ``unused`` (checkpoint-only tensors).
    Raises ``ValueError`` when the file cannot be read or nothing matches.
    """
    try:
        checkpoint = strip_prefix(read_checkpoint(path), "module.")
    except ModelLoadError as exc:
        raise ValueError(f"student option 'init_weights': {exc}") from exc
    own = network.state_dict()
    loaded, skipped = [], []
    for name, tensor in own.items():
        source = checkpoint.get(name)
        if source is None:
            continue
        if tuple(source.shape) == tuple(tensor.shape):
            loaded.append(name)
        else:
            skipped.append(f"{name}: checkpoint {tuple(source.shape)} vs student {tuple(tensor.shape)}")
    if not loaded:
        raise ValueError(
            f"student option 'init_weights': no tensor of {path} matches the student by name and shape"
        )
    network.load_state_dict({name: checkpoint[name] for name in loaded}, strict=False)
    report = {
        "source": path,
        "loaded": loaded,
        "skipped_shape": skipped,
        "not_in_checkpoint": sorted(set(own) - set(checkpoint)),
        "unused": sorted(set(checkpoint) - set(own)),
    }
    logger.info(
        "student init from %s: %d tensors loaded, %d skipped (shape), %d not in checkpoint, %d unused",
        path,
        len(loaded),
        len(skipped),
        len(report["not_in_checkpoint"]),
        len(report["unused"]),
    )
    return report
