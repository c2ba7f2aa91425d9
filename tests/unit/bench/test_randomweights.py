"""Random weights for speed runs: loadable by the model's own registry loader, reproducible from the seed."""

from __future__ import annotations

import pytest
import torch

from froq_ray.bench.randomweights import needs_weights, random_weights_file
from froq_ray.models import load_model


def test_random_weights_load_strictly_and_depend_on_the_seed(tmp_path):
    state = torch.get_rng_state()
    first = random_weights_file("mobilefacenet", tmp_path / "a", seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    again = random_weights_file("mobilefacenet", tmp_path / "b", seed=1)
    other = random_weights_file("mobilefacenet", tmp_path / "c", seed=2)
    models = [load_model("mobilefacenet", str(p)) for p in (first, again, other)]
    assert models[0].weights_sha256 == models[1].weights_sha256 != models[2].weights_sha256
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        out = [m.network(x) for m in models]
    assert out[0].shape == (2, 128) and torch.isfinite(out[0]).all()
    torch.testing.assert_close(out[0], out[1])
    assert not torch.allclose(out[0], out[2])


def test_which_models_need_weights_and_unsupported_families(tmp_path):
    assert (
        needs_weights("adaface_ir101") and needs_weights("iresnet50") and not needs_weights("dlib_resnet_v1")
    )
    with pytest.raises(KeyError, match="unknown model"):
        needs_weights("no_such_model")
    with pytest.raises(ValueError, match="no random-weights builder"):
        random_weights_file("onnx", tmp_path)


@pytest.mark.parametrize("name", ["adaface_ir18", "iresnet18"])
def test_other_families_build_their_registry_layout(tmp_path, name):
    model = load_model(name, str(random_weights_file(name, tmp_path)))
    assert model.name == name and model.embedding_size == 512
