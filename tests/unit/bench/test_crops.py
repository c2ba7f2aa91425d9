"""Benchmark crops: reproducible from (seed, index), realistic JPEG sizes, decodable, real-crop re-encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from froq_ray import status as st
from froq_ray.bench.crops import IMAGES_PER_IDENTITY, crop_path, list_sources, write_crops
from froq_ray.imaging.decode import decode_batch


def _files(crop_set) -> list[bytes]:
    return [p.read_bytes() for p in crop_set.paths]


def test_synthetic_crops_are_reproducible_realistic_and_decodable(tmp_path):
    first = write_crops(tmp_path / "a", 45, seed=3)
    again = write_crops(tmp_path / "b", 45, seed=3, workers=2, chunk=10)  # other processes, other chunks
    other = write_crops(tmp_path / "c", 45, seed=4)
    assert _files(first) == _files(again)
    assert all(x != y for x, y in zip(_files(first), _files(other), strict=True))
    sizes = np.array([len(b) for b in _files(first)])
    assert first.mean_bytes == pytest.approx(sizes.mean()) and first.max_bytes == sizes.max()
    assert 4500 <= sizes.mean() <= 8500 and sizes.min() > 3000, sizes  # like real 112x112 aligned crops
    decoded = decode_batch(_files(first), 112)
    assert decoded.statuses == [st.OK] * 45 and decoded.pixels.shape == (45, 112, 112, 3)
    assert len({d.tobytes() for d in decoded.pixels}) == 45  # every image differs
    with Image.open(io.BytesIO(_files(first)[0])) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (112, 112), "RGB")


def test_identity_folder_layout(tmp_path):
    crop_set = write_crops(tmp_path, IMAGES_PER_IDENTITY + 1, seed=0)
    folders = [p.parent.name for p in crop_set.paths]
    assert folders[:IMAGES_PER_IDENTITY] == ["id00000"] * IMAGES_PER_IDENTITY and folders[-1] == "id00001"
    assert crop_set.paths == [crop_path(tmp_path, i) for i in range(IMAGES_PER_IDENTITY + 1)]
    assert all(p.is_file() for p in crop_set.paths)


def test_real_crops_are_reencoded_with_a_small_jitter(tmp_path, lfw_dev_dir):
    source = tmp_path / "src"
    originals = sorted((lfw_dev_dir / "images").rglob("*.jpg"))[:3]
    for path in originals:
        (source / path.name).parent.mkdir(parents=True, exist_ok=True)
        (source / path.name).write_bytes(path.read_bytes())
    crop_set = write_crops(tmp_path / "out", 6, seed=1, source_dir=source)
    blobs = _files(crop_set)
    assert len(set(blobs)) == 6  # image i and i + 3 share a source but not their bytes
    decoded = decode_batch(blobs, 112).pixels.astype(np.float64)
    truth = decode_batch([p.read_bytes() for p in list_sources(source)], 112).pixels.astype(np.float64)
    for i in range(6):
        corr = np.corrcoef(decoded[i].ravel(), truth[i % 3].ravel())[0, 1]
        others = [np.corrcoef(decoded[i].ravel(), truth[j].ravel())[0, 1] for j in range(3) if j != i % 3]
        assert corr > 0.85 and corr > max(others), (i, corr, others)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        write_crops(tmp_path, 0)
    with pytest.raises(FileNotFoundError, match="no source images"):
        write_crops(tmp_path / "x", 2, source_dir=tmp_path / "empty")
