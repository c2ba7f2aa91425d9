"""MobileFaceNet: exact checkpoint layout, the real weights on real LFW crops, and the upstream hook quirks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from froq_ray.models import ModelLoadError, load_model
from froq_ray.models.mobilefacenet import MobileFaceNet

PROVENANCE_SHA256 = "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4"
PAIRS_PER_KIND = 8


@pytest.fixture(scope="module")
def model(mobilefacenet_pt: Path):
    return load_model("mobilefacenet", str(mobilefacenet_pt))


def read_pairs(lfw_dev_dir: Path, count: int) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """The first ``count`` genuine and impostor pairs of fold 1 of pairs.txt."""

    def image(name: str, index: str) -> Path:
        return lfw_dev_dir / "images" / name / f"{name}_{int(index):04d}.jpg"

    lines = (lfw_dev_dir / "pairs.txt").read_text().splitlines()
    per_fold = int(lines[0].split()[1])
    genuine = [line.split("\t") for line in lines[1 : 1 + count]]
    impostor = [line.split("\t") for line in lines[1 + per_fold : 1 + per_fold + count]]
    assert all(len(f) == 3 for f in genuine) and all(len(f) == 4 for f in impostor)
    return (
        [(image(n, i), image(n, j)) for n, i, j in genuine],
        [(image(a, i), image(b, j)) for a, i, b, j in impostor],
    )


def embed(model, paths: list[Path]) -> torch.Tensor:
    crops = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]))
    with torch.inference_mode():
        return F.normalize(model.network(model.input_transform()(crops)), dim=1)


def pair_cosines(model, pairs: list[tuple[Path, Path]]) -> torch.Tensor:
    return (embed(model, [a for a, _ in pairs]) * embed(model, [b for _, b in pairs])).sum(dim=1)


def test_module_keys_and_shapes_equal_the_checkpoint(mobilefacenet_pt: Path) -> None:
    state = torch.load(mobilefacenet_pt, map_location="cpu", weights_only=True)
    own = MobileFaceNet().state_dict()
    assert len(state) == len(own) == 307
    assert list(own) == list(state)  # same names in the same order as upstream
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_loaded_model_record(model, mobilefacenet_pt: Path) -> None:
    assert model.name == "mobilefacenet" and model.family == "mobilefacenet"
    assert model.embedding_size == 128
    assert (
        model.weights_sha256 == PROVENANCE_SHA256 == hashlib.sha256(mobilefacenet_pt.read_bytes()).hexdigest()
    )
    c = model.contract
    assert (c.size, c.channel_order, c.alignment) == (112, "RGB", "arcface112")
    assert c.mean == (0.485, 0.456, 0.406) and c.std == (0.229, 0.224, 0.225)
    assert not model.network.training
    assert all(not p.requires_grad for p in model.network.parameters())
    assert all(p.device.type == "cpu" for p in model.network.parameters())
    params = sum(p.numel() for p in model.network.parameters())
    print(f"mobilefacenet parameters: {params}")
    assert 0.9e6 < params < 1.1e6  # PROVENANCE: ~1.0M


def test_weights_are_the_checkpoint(model, mobilefacenet_pt: Path) -> None:
    state = torch.load(mobilefacenet_pt, map_location="cpu", weights_only=True)
    loaded = model.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_genuine_pairs_are_more_similar_than_impostors_on_real_crops(model, lfw_dev_dir: Path) -> None:
    genuine, impostor = read_pairs(lfw_dev_dir, PAIRS_PER_KIND)
    gen, imp = pair_cosines(model, genuine), pair_cosines(model, impostor)
    print(f"genuine cosines {gen.numpy().round(3)}; impostor cosines {imp.numpy().round(3)}")
    assert gen.min() > imp.max()
    assert gen.min() > 0.4 and imp.max() < 0.3


def test_embedding_has_the_contract_shape(model) -> None:
    crops = torch.randint(0, 256, (3, 112, 112, 3), dtype=torch.uint8)
    with torch.inference_mode():
        out = model.network(model.input_transform()(crops))
    assert out.shape == (3, 128) and out.dtype == torch.float32


def test_shared_relu_fires_twice_per_forward(model) -> None:
    calls: list[tuple[int, ...]] = []
    modules = dict(model.network.named_modules())
    handle = modules["dw_conv.relu"].register_forward_hook(lambda _m, _i, o: calls.append(tuple(o.shape)))
    try:
        with torch.inference_mode():
            model.network(torch.randn(2, 3, 112, 112))
    finally:
        handle.remove()
    assert calls == [(2, 64, 56, 56), (2, 64, 56, 56)]


def test_inplace_relu6_overwrites_the_batchnorm_output_a_hook_kept(model) -> None:
    """Upstream quirk: conv1.2 is ReLU6(inplace=True), so a kept (not cloned) BN output gets clamped later."""
    kept: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        kept["reference"] = output
        kept["copy"] = output.clone()

    bn = dict(model.network.named_modules())["conv1.1"]
    handle = bn.register_forward_hook(keep)
    try:
        with torch.inference_mode():
            model.network(torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)))
    finally:
        handle.remove()
    assert kept["copy"].min() < 0 and kept["copy"].max() > 6  # the BN output really has values ReLU6 clips
    assert torch.equal(kept["reference"], kept["copy"].clamp(0, 6))


def test_rejects_options_and_a_wrong_checkpoint(mobilefacenet_pt: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="takes no options"):
        load_model("mobilefacenet", str(mobilefacenet_pt), {"channel_permutation": "reference"})
    state = torch.load(mobilefacenet_pt, map_location="cpu", weights_only=True)
    del state["gdconv.bn.running_var"]
    state["conv3.weight"] = torch.zeros(256, 512, 1, 1)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(
        ModelLoadError, match=r"missing keys: gdconv\.bn\.running_var.*shape mismatches: conv3\.weight"
    ):
        load_model("mobilefacenet", str(bad))
