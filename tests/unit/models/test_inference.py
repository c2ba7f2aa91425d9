"""The one batched-inference feed and the one device / precision resolution (froq_ray.models.inference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from froq_ray.imaging.contract import InputContract
from froq_ray.imaging.prepare import ModelInputTransform
from froq_ray.models.inference import (
    DeviceUnavailableError,
    map_model_batches,
    model_batches,
    precision_name,
    resolve_device,
    torch_dtype,
)


@pytest.fixture
def transform():
    contract = InputContract(size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channel_order="RGB")
    return ModelInputTransform(contract, source_size=8)


def test_model_batches_split_transform_and_lay_out(transform):
    crops = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    expected = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (x/255 - 0.5) / 0.5
    with torch.inference_mode():
        batches = list(model_batches(crops, transform, "cpu", 2, memory_format="channels_last"))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert all(
        b.dtype == torch.float32 and b.is_contiguous(memory_format=torch.channels_last) for b in batches
    )
    torch.testing.assert_close(torch.cat(batches), expected, rtol=0, atol=1e-5)
    sums = map_model_batches(lambda x: float(x.sum()), crops, transform, "cpu", batch_size=4)
    assert len(sums) == 2 and np.isclose(sum(sums), float(expected.sum()), rtol=1e-5)
    float_input = expected.numpy()
    torch.testing.assert_close(torch.cat(list(model_batches(float_input, transform, "cpu", 3))), expected)
    with pytest.raises(ValueError, match="batch_size"):
        next(model_batches(crops, transform, "cpu", 0))


def test_device_and_precision_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="^filter.classifiability.device is 'cuda'"):
            resolve_device("cuda", "filter.classifiability.device")
    assert [torch_dtype(p) for p in ("fp32", "bf16", "fp16")] == [
        torch.float32,
        torch.bfloat16,
        torch.float16,
    ]
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ValueError, match="precision must be one of"):
        torch_dtype("fp64")
