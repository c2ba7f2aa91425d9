"""The reference-style loop: its transform equals the model's input transform, and its qualities equal
FroqScorer's on the same files (with 0 and 2 loader workers); hooks are removed afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from froq_ray.bench.reference_loop import CloningHooks, ReferenceTransform, run_reference_loop
from froq_ray.imaging.contract import InputContract
from froq_ray.imaging.folder import load_crops_strict
from froq_ray.quality.scorer import FroqScorer
from tests.tiny_models import hand_artifact, random_crops, tiny_fr_model

SELECTED = [
    "block.act",
    "block.bn2",
    "stem",
]  # in-place ops after two of them: the clones must be taken early


@pytest.mark.parametrize(
    "contract",
    [
        InputContract(size=112, channel_order="RGB", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        InputContract(size=112, channel_order="BGR", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ],
)
def test_reference_transform_matches_the_model_input_transform(contract):
    from froq_ray.imaging.prepare import ModelInputTransform

    crops = random_crops(3, 112, seed=5)
    expected = ModelInputTransform(contract)(torch.from_numpy(crops))
    got = torch.stack([ReferenceTransform(contract)(Image.fromarray(c)) for c in crops])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_reference_transform_resizes_other_sizes():
    contract = InputContract(size=16, channel_order="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = ReferenceTransform(contract)(Image.fromarray(random_crops(1, 40, seed=1)[0]))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32


@pytest.fixture(scope="module")
def model():
    return tiny_fr_model(size=16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops")
    paths = []
    for i, crop in enumerate(random_crops(70, 16, seed=2)):  # 70 > one batch of 64
        path = folder / f"{i:03d}.png"  # lossless: both loops must see the same pixels
        Image.fromarray(crop).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_qualities_equal_the_froq_scorer(model, files, workers):
    result = run_reference_loop(
        files, model.network, model.contract, SELECTED, device="cpu", num_workers=workers
    )
    expected = FroqScorer(model, hand_artifact(model, SELECTED)).score(load_crops_strict(files, 16)).quality
    assert result.images == 70 and result.seconds > 0 and result.images_per_second > 0
    got = np.array([result.qualities[str(p)] for p in files])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert all(not m._forward_hooks for m in model.network.modules())


def test_cloning_hooks_keep_the_value_before_later_in_place_ops(model):
    x = torch.randn(4, 3, 16, 16)
    hooks = CloningHooks(model.network, ["block.bn2"])
    try:
        with torch.no_grad():
            model.network(x)
            stem = model.network.stem(x)
            block = model.network.block
            y = block.act(block.bn1(block.conv1(stem)))
            before_add = block.bn2(block.conv2(y))
        torch.testing.assert_close(hooks.outputs["block.bn2"], before_add)
        torch.testing.assert_close(hooks.quality(4), before_add.reshape(4, -1).norm(dim=1))
    finally:
        hooks.remove()
