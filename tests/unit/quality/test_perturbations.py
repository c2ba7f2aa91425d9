"""Pseudo-labels: perturbations vs explicit constructions, fused execution vs per-image, seeding, precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from froq_ray.imaging.contract import InputContract
from froq_ray.quality.perturbations import PerturbationSettings, PseudoLabeler, noise_masks, occlusion_masks
from tests.tiny_models import (
    tiny_model_fixture,  # noqa: F401  (the module fixture ``model``)
    tiny_network_input,
)

SMALL = PerturbationSettings(noise_masks=3, noise_alphas=(1e-3, 0.2), noise_seed=7, occlusion_cell=5)


@pytest.fixture(scope="module")
def x(model):
    return tiny_network_input(model, 5, seed=3)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().ravel(), b.double().ravel()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize(
    "height,width,cell", [(16, 16, 4), (16, 16, 5), (112, 112, 14), (150, 150, 14), (12, 20, 3)]
)
def test_occlusion_grid_cells(height, width, cell):
    masks = occlusion_masks(height, width, cell)
    rows, cols = height // cell, width // cell
    assert masks.shape == (rows * cols, 1, height, width)
    assert (masks.sum(dim=(1, 2, 3)) == cell * cell).all()  # every cell is a full square
    assert masks.sum(dim=0).max() == 1  # non-overlapping
    covered = masks.any(dim=0)[0]
    ys, xs = covered.any(dim=1).nonzero().ravel(), covered.any(dim=0).nonzero().ravel()
    top, left = (height - rows * cell) // 2, (width - cols * cell) // 2
    assert (ys.min().item(), ys.max().item()) == (top, top + rows * cell - 1)  # centred grid
    assert (xs.min().item(), xs.max().item()) == (left, left + cols * cell - 1)


def test_occlusion_150_over_14_leaves_a_centred_border():
    covered = occlusion_masks(150, 150, 14).any(dim=0)[0]
    assert covered[5:145, 5:145].all() and covered.sum() == 140 * 140


def test_occlusion_copies_set_the_cell_to_the_per_channel_minimum(model):
    contract = InputContract(size=8, channel_order="BGR", mean=(0.2, 0.4, 0.6), std=(0.5, 0.25, 0.3))
    settings = PerturbationSettings(flip=False, noise_masks=0, occlusion_cell=4)
    labeler = PseudoLabeler(model.network, contract, settings)
    img = torch.randn(2, 3, 8, 8)
    copies = labeler.perturb(img)
    assert copies.shape == (2, 4, 3, 8, 8)
    black = torch.tensor([-0.6 / 0.3, -0.4 / 0.25, -0.2 / 0.5])  # B, G, R network values of pixel 0
    for i in range(2):
        for cell, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            expected = img[i].clone()
            expected[:, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] = black.view(3, 1, 1)
            torch.testing.assert_close(copies[i, cell], expected)


def test_noise_copies_are_the_seeded_convex_mix(model):
    settings = PerturbationSettings(
        flip=False, noise_masks=3, noise_alphas=(0.1, 0.5), noise_seed=11, occlusion_cell=0
    )
    labeler = PseudoLabeler(model.network, model.contract, settings)
    img = torch.randn(2, 3, 16, 16)
    copies = labeler.perturb(img)
    masks = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(11))
    expected = torch.stack(
        [
            torch.stack([(1 - a) * img[i] + a * masks[k] for a in (0.1, 0.5) for k in range(3)])
            for i in range(2)
        ]
    )
    torch.testing.assert_close(copies, expected)


def test_noise_masks_reproducible_and_seed_dependent():
    assert torch.equal(noise_masks((3, 8, 8), 4, seed=5), noise_masks((3, 8, 8), 4, seed=5))
    assert not torch.allclose(noise_masks((3, 8, 8), 4, seed=5), noise_masks((3, 8, 8), 4, seed=6))


def test_components_match_an_explicit_per_copy_computation(model, x):
    labeler = PseudoLabeler(model.network, model.contract, SMALL)
    result = labeler(x)
    net = model.network
    masks = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for i in range(x.shape[0]):
            img = x[i : i + 1]
            ref = net(img)
            flip = cosine(ref, net(torch.flip(img, dims=[3])))
            noise = np.mean(
                [
                    cosine(ref, net((1 - a) * img + a * masks[k : k + 1]))
                    for a in (1e-3, 0.2)
                    for k in range(3)
                ]
            )
            occluded = []
            for r in range(3):
                for c in range(3):  # 16 // 5 = 3 cells per side, centred: offset (16 - 15) // 2 = 0
                    copy = img.clone()
                    copy[:, :, r * 5 : r * 5 + 5, c * 5 : c * 5 + 5] = -1.0
                    occluded.append(cosine(ref, net(copy)))
            occlusion = float(np.mean(occluded))
            assert result["pl_flip"][i] == pytest.approx(flip, abs=1e-5)
            assert result["pl_noise"][i] == pytest.approx(noise, abs=1e-5)
            assert result["pl_occlusion"][i] == pytest.approx(occlusion, abs=1e-5)
            assert result["pseudo_label"][i] == pytest.approx((flip + noise + occlusion) / 3, abs=1e-5)
    for key in ("pl_flip", "pl_noise", "pl_occlusion", "pseudo_label"):
        assert result[key].dtype == np.float32 and result[key].shape == (5,)


def test_flip_of_a_symmetric_image_scores_one(model):
    half = torch.randn(3, 3, 16, 8)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    labeler = PseudoLabeler(model.network, model.contract, SMALL)
    np.testing.assert_allclose(labeler(symmetric)["pl_flip"], 1.0, atol=1e-6)


def test_fused_batches_equal_per_image_results(model, x):
    fused = PseudoLabeler(
        model.network, model.contract, PerturbationSettings(**{**SMALL.to_dict(), "max_forward_batch": 7})
    )
    single = PseudoLabeler(model.network, model.contract, SMALL)
    together = fused(x)
    for i in range(x.shape[0]):
        alone = single(x[i : i + 1])
        for key, value in alone.items():
            np.testing.assert_allclose(together[key][i], value[0], atol=1e-6)


def test_forward_passes_are_fused_across_images(model, x):
    settings = PerturbationSettings(**{**SMALL.to_dict(), "max_forward_batch": 16})
    labeler = PseudoLabeler(model.network, model.contract, settings)
    per_image = 1 + 3 * 2 + 9
    assert labeler.copies_per_image((3, 16, 16)) == per_image
    sizes = []
    handle = model.network.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        labeler(x)
    finally:
        handle.remove()
    total = x.shape[0] * per_image
    assert sizes == [5] + [16] * (total // 16) + ([total % 16] if total % 16 else [])


def test_reference_embedding_argument_gives_same_result(model, x):
    labeler = PseudoLabeler(model.network, model.contract, SMALL)
    with torch.no_grad():
        reference = model.network(x)
    given, computed = labeler(x, reference_embedding=reference), labeler(x)
    for key in computed:
        np.testing.assert_allclose(given[key], computed[key], atol=1e-6)


def test_seeds_reproduce_and_differ(model, x):
    def noise_component(seed):
        s = PerturbationSettings(
            flip=False, noise_masks=2, noise_alphas=(0.3,), noise_seed=seed, occlusion_cell=0
        )
        return PseudoLabeler(model.network, model.contract, s)(x)["pl_noise"]

    np.testing.assert_array_equal(noise_component(1), noise_component(1))
    assert not np.allclose(noise_component(1), noise_component(2), atol=1e-6)


def test_disabled_components_are_absent_and_the_mean_uses_the_rest(model, x):
    s = PerturbationSettings(flip=True, noise_masks=0, occlusion_cell=4)
    result = PseudoLabeler(model.network, model.contract, s)(x)
    assert set(result) == {"pl_flip", "pl_occlusion", "pseudo_label"}
    np.testing.assert_allclose(
        result["pseudo_label"], (result["pl_flip"] + result["pl_occlusion"]) / 2, atol=1e-6
    )
    with pytest.raises(ValueError, match="at least one"):
        PerturbationSettings(flip=False, noise_masks=0, occlusion_cell=0)


def test_precision_is_recorded_and_low_precision_stays_close(model, x):
    assert PseudoLabeler(model.network, model.contract, SMALL).precision == "fp32"
    low = PseudoLabeler(model.network, model.contract, SMALL, autocast_dtype=torch.bfloat16)
    assert low.precision == "bf16"
    full = PseudoLabeler(model.network, model.contract, SMALL)(x)
    approx = low(x)
    assert all(v.dtype == np.float32 for v in approx.values())
    np.testing.assert_allclose(approx["pl_occlusion"], full["pl_occlusion"], atol=3e-2)


def test_settings_round_trip():
    s = PerturbationSettings(noise_alphas=(0.001, 0.002), noise_seed=3)
    assert PerturbationSettings.from_dict(s.to_dict()) == s
    assert math.isclose(s.noise_alphas[1], 0.002)
    with pytest.raises(ValueError, match="bogus"):
        PerturbationSettings.from_dict({"bogus": 1})
