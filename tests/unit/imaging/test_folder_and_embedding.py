"""Identity-folder listing and loading, and the batched embedding loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from froq_ray import status as st
from froq_ray.imaging.contract import InputContract
from froq_ray.imaging.folder import list_identity_folder, load_crops, load_crops_strict
from froq_ray.models.base import LoadedModel
from froq_ray.models.inference import embed_crops


def _png(path: Path, seed: int, size: int = 112) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    return pixels


def test_listing_is_sorted_with_top_level_identities(tmp_path: Path) -> None:
    _png(tmp_path / "Bob" / "b1.png", 1)
    _png(tmp_path / "Ann" / "sub" / "a2.PNG", 2)
    _png(tmp_path / "Ann" / "a1.png", 3)
    _png(tmp_path / ".cache" / "x.png", 4)
    (tmp_path / "Bob" / "notes.txt").write_text("not an image")
    listing = list_identity_folder(tmp_path)
    assert listing.paths == ["Ann/a1.png", "Ann/sub/a2.PNG", "Bob/b1.png"]
    assert listing.identities == ["Ann", "Ann", "Bob"]
    assert listing.absolute_paths()[2] == tmp_path / "Bob" / "b1.png"


def test_image_outside_an_identity_folder_is_an_error(tmp_path: Path) -> None:
    _png(tmp_path / "stray.png", 1)
    with pytest.raises(ValueError, match="identity folder"):
        list_identity_folder(tmp_path)


def test_loading_decodes_resizes_and_reports_failures(tmp_path: Path) -> None:
    a = _png(tmp_path / "A" / "a.png", 1)
    _png(tmp_path / "B" / "big.png", 2, size=224)
    (tmp_path / "B" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    good = [tmp_path / "A" / "a.png", tmp_path / "B" / "big.png"]
    crops = load_crops_strict(good)
    assert crops.shape == (2, 112, 112, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops[0], a)  # PNG is lossless and already 112x112
    batch = load_crops([*good, tmp_path / "B" / "bad.png", tmp_path / "B" / "missing.png"], chunk=3)
    assert batch.statuses[:2] == [st.OK, st.OK]
    assert batch.statuses[2] in (st.CORRUPT, st.NOT_AN_IMAGE)
    assert batch.statuses[3] == st.READ_ERROR and "missing.png" in batch.errors[3]
    with pytest.raises(ValueError, match="2 of 3 images failed.*bad.png.*missing.png"):
        load_crops_strict([good[0], tmp_path / "B" / "bad.png", tmp_path / "B" / "missing.png"])


def test_real_lfw_dev_listing(lfw_dev_dir: Path) -> None:
    listing = list_identity_folder(lfw_dev_dir / "images")
    assert len(listing) == 3811 and len(set(listing.identities)) == 2086


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, stride=4)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 4)
        return self.fc(x.flatten(1))


def _tiny_model() -> LoadedModel:
    torch.manual_seed(0)
    net = _TinyNet().eval()
    contract = InputContract(size=112, channel_order="BGR", mean=(0.5, 0.4, 0.3), std=(0.5, 0.5, 0.5))
    return LoadedModel("tiny", "test", net, contract, 8, "<memory>", "0" * 64)


def test_embedding_loop_matches_one_direct_forward() -> None:
    model = _tiny_model()
    crops = np.random.default_rng(0).integers(0, 256, size=(7, 112, 112, 3), dtype=np.uint8)
    got = embed_crops(model, crops, batch_size=3)
    # direct: (pixel/255 - mean)/std per RGB channel, then BGR order, in one batch
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(model.contract.mean).view(1, 3, 1, 1)) / torch.tensor(model.contract.std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected = model.network(x[:, [2, 1, 0]]).numpy()
    assert got.dtype == np.float32 and got.shape == (7, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        embed_crops(model, crops, batch_size=128), embed_crops(model, crops, batch_size=7)
    )


def test_embedding_loop_rejects_float_crops() -> None:
    with pytest.raises(ValueError, match="uint8 crops"):
        embed_crops(_tiny_model(), np.zeros((1, 112, 112, 3), np.float32))
