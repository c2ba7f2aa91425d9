"""IResNet (arcface_torch) and AdaFace (Lightning .ckpt): key layouts against a written-out spec, round trips
of randomly initialised checkpoints, wrong-architecture errors, channel order and Lightning checkpoint reading.

No pretrained weights exist here, so the layouts are checked against specs built in this file from the upstream
architecture descriptions (stage widths, blocks per stage, which blocks carry a projection shortcut).
"""

from __future__ import annotations

import hashlib
import sys
import types
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from froq_ray.models import ModelLoadError, load_model
from froq_ray.models.adaface import AdaFaceBackbone, read_lightning_checkpoint
from froq_ray.models.iresnet import build_iresnet

Spec = dict[str, tuple[int, ...]]
WIDTHS = (64, 128, 256, 512)
FLAT = 512 * 7 * 7

IRESNET_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
ADAFACE_UNITS = {"adaface_ir18": (2, 2, 2, 2), "adaface_ir50": (3, 4, 14, 3), "adaface_ir101": (3, 13, 30, 3)}


# ---------------------------------------------------------------------------------------------------- specs


def bn_spec(prefix: str, channels: int, affine: bool = True) -> Spec:
    spec: Spec = {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,)} if affine else {}
    spec.update({f"{prefix}.running_mean": (channels,), f"{prefix}.running_var": (channels,)})
    spec[f"{prefix}.num_batches_tracked"] = ()
    return spec


def stage_blocks(blocks: tuple[int, ...]):
    """(stage index from 1, block index, in channels, out channels) for every block."""
    in_ch = WIDTHS[0]
    for stage, (width, count) in enumerate(zip(WIDTHS, blocks, strict=True), start=1):
        for b in range(count):
            yield stage, b, in_ch if b == 0 else width, width
        in_ch = width


def branch_spec(names: list[str], cin: int, w: int) -> Spec:
    """The improved-residual branch of both families, BN - conv 3x3 - BN - PReLU - conv 3x3 - BN, under the six
    module names given in that order."""
    bn_in, conv1, bn_mid, prelu, conv2, bn_out = names
    return {
        **bn_spec(bn_in, cin),
        f"{conv1}.weight": (w, cin, 3, 3),
        **bn_spec(bn_mid, w),
        f"{prelu}.weight": (w,),
        f"{conv2}.weight": (w, w, 3, 3),
        **bn_spec(bn_out, w),
    }


def iresnet_spec(blocks: tuple[int, ...]) -> Spec:
    spec: Spec = {"conv1.weight": (64, 3, 3, 3), **bn_spec("bn1", 64), "prelu.weight": (64,)}
    for stage, b, cin, w in stage_blocks(blocks):
        p = f"layer{stage}.{b}"
        spec.update(
            branch_spec([f"{p}.{n}" for n in ("bn1", "conv1", "bn2", "prelu", "conv2", "bn3")], cin, w)
        )
        if b == 0:  # every stage starts with stride 2, so its first block projects the shortcut
            spec[f"{p}.downsample.0.weight"] = (w, cin, 1, 1)
            spec.update(bn_spec(f"{p}.downsample.1", w))
    spec.update(bn_spec("bn2", 512))
    spec.update({"fc.weight": (512, FLAT), "fc.bias": (512,)})
    spec.update(bn_spec("features", 512))
    return spec


def adaface_spec(units: tuple[int, ...]) -> Spec:
    spec: Spec = {"input_layer.0.weight": (64, 3, 3, 3), **bn_spec("input_layer.1", 64)}
    spec["input_layer.2.weight"] = (64,)
    for i, (_, _, cin, w) in enumerate(stage_blocks(units)):
        p = f"body.{i}"
        if cin != w:  # otherwise the shortcut is a weightless MaxPool2d(1, stride)
            spec[f"{p}.shortcut_layer.0.weight"] = (w, cin, 1, 1)
            spec.update(bn_spec(f"{p}.shortcut_layer.1", w))
        spec.update(branch_spec([f"{p}.res_layer.{i}" for i in range(6)], cin, w))
    spec.update(bn_spec("output_layer.0", 512))
    spec.update({"output_layer.3.weight": (512, FLAT), "output_layer.3.bias": (512,)})
    spec.update(bn_spec("output_layer.4", 512, affine=False))
    return spec


def layout(network: nn.Module) -> Spec:
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


# name: (build it, its spec, blocks per stage, keys outside the blocks); every block has 18 keys
LAYOUTS = {
    **{
        f"iresnet{depth}": (partial(build_iresnet, depth), iresnet_spec, blocks, 43)
        for depth, blocks in IRESNET_BLOCKS.items()
    },
    **{
        name: (partial(AdaFaceBackbone, units), adaface_spec, units, 35)
        for name, units in ADAFACE_UNITS.items()
    },
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_key_layout(name: str) -> None:
    build, spec, blocks, outside_blocks = LAYOUTS[name]
    with torch.device("meta"):  # layout only: no memory, no init cost for r100/r200
        network = build()
    expected = spec(blocks)
    assert layout(network) == expected
    assert len(expected) == outside_blocks + 18 * sum(blocks)


# ---------------------------------------------------------------------------------------------------- round trips


def randomise(network: nn.Module, seed: int) -> nn.Module:
    """Give every weight and BatchNorm statistic a non-default value, so a round trip proves something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in network.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return network.eval()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def iresnet18_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """An arcface_torch-style backbone.pth saved from DataParallel (keys prefixed ``module.``)."""
    network = randomise(build_iresnet(18), seed=18)
    path = tmp_path_factory.mktemp("iresnet") / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in network.state_dict().items()}, path)
    return path, network


def lightning_checkpoint(backbone: dict[str, torch.Tensor], **extra: object) -> dict[str, object]:
    """A dict shaped like an AdaFace training checkpoint: backbone under ``model.``, margin head under ``head.``."""
    state = {f"model.{k}": v for k, v in backbone.items()}
    state["head.kernel"] = torch.randn(512, 10)
    state["head.t"] = torch.zeros(1)
    return {
        "epoch": 25,
        "global_step": 123456,
        "pytorch-lightning_version": "1.8.6",
        "state_dict": state,
        "hyper_parameters": {
            "arch": "ir_18",
            "head": "adaface",
            "m": 0.4,
            "h": 0.333,
            "lr_milestones": "12,20,24",
        },
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}],
        **extra,
    }


@pytest.fixture(scope="module")
def adaface_ir18_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    network = randomise(AdaFaceBackbone(ADAFACE_UNITS["adaface_ir18"]), seed=101)
    path = tmp_path_factory.mktemp("adaface") / "adaface_ir18.ckpt"
    torch.save(lightning_checkpoint(network.state_dict()), path)
    return path, network


@pytest.mark.parametrize(
    "name, checkpoint, family, channel_order",
    [
        pytest.param("iresnet18", "iresnet18_ckpt", "iresnet", "RGB", id="iresnet18-arcface_torch-pth"),
        pytest.param("adaface_ir18", "adaface_ir18_ckpt", "adaface", "BGR", id="adaface_ir18-lightning-ckpt"),
    ],
)
def test_round_trip(request, inputs: torch.Tensor, name, checkpoint, family, channel_order) -> None:
    path, original = request.getfixturevalue(checkpoint)
    model = load_model(name, str(path))
    with torch.inference_mode():
        expected, got = original(inputs), model.network(inputs)
    assert got.shape == (1, 512) and torch.isfinite(got).all() and got.abs().max() > 0
    assert torch.equal(got, expected)
    assert model.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.family == family and model.embedding_size == 512
    c = model.contract
    assert (c.size, c.channel_order, c.mean, c.std) == (112, channel_order, (0.5,) * 3, (0.5,) * 3)
    assert not model.network.training and not any(p.requires_grad for p in model.network.parameters())


# ---------------------------------------------------------------------------------------------------- wrong checkpoints


def test_r18_weights_into_r50_name_the_missing_keys(iresnet18_ckpt) -> None:
    with pytest.raises(ModelLoadError, match=r"IResNet-50.*missing keys: .*layer1\.2\.") as err:
        load_model("iresnet50", str(iresnet18_ckpt[0]))
    assert "unexpected keys" not in str(err.value)  # r18's keys are a subset of r50's


def test_mobilefacenet_weights_into_iresnet(mobilefacenet_pt: Path) -> None:
    with pytest.raises(
        ModelLoadError, match=r"missing keys: bn1\..*\(187 in all\); unexpected keys: .*\(307 in all\)"
    ):
        load_model("iresnet18", str(mobilefacenet_pt))


def test_shape_mismatch_is_named(iresnet18_ckpt, tmp_path: Path) -> None:
    state = torch.load(iresnet18_ckpt[0], weights_only=True)
    state["module.fc.weight"] = torch.zeros(256, FLAT)
    path = tmp_path / "narrow.pth"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=r"shape mismatches: fc\.weight: checkpoint \(256, 25088\)"):
        load_model("iresnet18", str(path))


def test_adaface_ir18_into_ir50_and_iresnet_into_adaface(adaface_ir18_ckpt, iresnet18_ckpt) -> None:
    # IR-18's body.2 opens stage 2 (64 -> 128, projection shortcut); IR-50's body.2 is still in stage 1.
    expected = (
        r"adaface_ir50.*missing keys: body\.10\..*unexpected keys: body\.2\.shortcut_layer\.0\.weight.*"
        r"shape mismatches: body\.2\.res_layer\.1\.weight: checkpoint \(128, 64, 3, 3\) vs model \(64, 64, 3, 3\)"
    )
    with pytest.raises(ModelLoadError, match=expected):
        load_model("adaface_ir50", str(adaface_ir18_ckpt[0]))
    with pytest.raises(
        ModelLoadError,
        match=r"missing keys: body\.0\..*\(179 in all\); unexpected keys: bn1\..*\(187 in all\)",
    ):
        load_model("adaface_ir18", str(iresnet18_ckpt[0]))


# ------------------------------------------------------------------------------------------------ AdaFace input order


def test_adaface_channel_orders(adaface_ir18_ckpt) -> None:
    path = str(adaface_ir18_ckpt[0])
    crops = torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8)
    rgb = (crops.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5  # independent of the transform module
    default = load_model("adaface_ir18", path)
    reference = load_model("adaface_ir18", path, {"channel_permutation": "reference"})
    assert default.contract.channel_order == "BGR" and reference.contract.channel_order == "BRG"
    torch.testing.assert_close(default.input_transform()(crops), rgb[:, [2, 1, 0]])
    torch.testing.assert_close(
        reference.input_transform()(crops), rgb[:, [2, 0, 1]]
    )  # FROQ reference's x[:, [2,0,1]]
    assert default.weights_sha256 == reference.weights_sha256
    assert default.identity() != reference.identity()


@pytest.mark.parametrize(
    "options", [{"channel_permutation": "rgb"}, {"channel_permutation": [2, 0, 1]}, {"bgr": True}]
)
def test_adaface_rejects_bad_options(adaface_ir18_ckpt, options: dict) -> None:
    with pytest.raises(ModelLoadError, match="channel_permutation"):
        load_model("adaface_ir18", str(adaface_ir18_ckpt[0]), options)


# ---------------------------------------------------------------------------------------------------- Lightning pickles


def fake_module(monkeypatch: pytest.MonkeyPatch, dotted: str, **attrs: object) -> None:
    """Register ``dotted`` (and its parents) in sys.modules, so pickle can name classes that live there."""
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for key, value in attrs.items():
        setattr(sys.modules[dotted], key, value)


def test_lightning_attribute_dict_hyper_parameters_are_read_as_plain_dicts(
    monkeypatch, tmp_path: Path
) -> None:
    class AttributeDict(dict):
        def __getattr__(self, key: str) -> object:
            return self[key]

    AttributeDict.__module__, AttributeDict.__qualname__ = (
        "pytorch_lightning.utilities.parsing",
        "AttributeDict",
    )
    fake_module(monkeypatch, AttributeDict.__module__, AttributeDict=AttributeDict)
    weights = {"input_layer.0.weight": torch.randn(64, 3, 3, 3)}
    path = tmp_path / "lightning.ckpt"
    torch.save(lightning_checkpoint(weights, hyper_parameters=AttributeDict(arch="ir_18", lr=0.1)), path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == [
        "pytorch_lightning.utilities.parsing.AttributeDict"
    ]
    checkpoint = read_lightning_checkpoint(str(path))  # weights_only, without Lightning installed
    assert type(checkpoint["hyper_parameters"]) is dict
    assert checkpoint["hyper_parameters"] == {"arch": "ir_18", "lr": 0.1}
    assert torch.equal(
        checkpoint["state_dict"]["model.input_layer.0.weight"], weights["input_layer.0.weight"]
    )


def test_other_python_objects_in_a_checkpoint_are_refused_clearly(monkeypatch, tmp_path: Path) -> None:
    class TrainerConfig:
        pass

    TrainerConfig.__module__, TrainerConfig.__qualname__ = "my_trainer.config", "TrainerConfig"
    fake_module(monkeypatch, TrainerConfig.__module__, TrainerConfig=TrainerConfig)
    path = tmp_path / "custom.ckpt"
    torch.save(
        lightning_checkpoint({"input_layer.0.weight": torch.ones(1)}, hyper_parameters=TrainerConfig()), path
    )
    with pytest.raises(ModelLoadError, match=r"refuses: \['my_trainer\.config\.TrainerConfig'\].*re-save"):
        load_model("adaface_ir18", str(path))


def test_bare_adaface_state_dict_is_accepted(tmp_path: Path) -> None:
    network = randomise(AdaFaceBackbone(ADAFACE_UNITS["adaface_ir18"]), seed=3)
    path = tmp_path / "bare.pth"
    torch.save(network.state_dict(), path)
    loaded = load_model("adaface_ir18", str(path)).network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in network.state_dict().items())
