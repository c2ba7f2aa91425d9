"""Student networks: shapes, teacher-unit output, determinism, option errors, cost, MobileFaceNet init."""

from __future__ import annotations

import pytest
import torch

from froq_ray.distill.cost import count_flops, count_params
from froq_ray.distill.students import (
    STUDENT_ARCHS,
    build_student,
    final_map_size,
    student_contract,
)
from froq_ray.models.base import read_checkpoint, strip_prefix
from froq_ray.models.mobilefacenet import IMAGENET_MEAN, IMAGENET_STD, MobileFaceNet
from tests.tiny_students import TINY_STUDENT_OPTIONS, seeded_student

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", STUDENT_ARCHS)
@pytest.mark.parametrize("size", [64, 112])
def test_output_is_one_teacher_unit_value_per_image(arch, size):
    network = seeded_student(arch, size).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        standardised = network.forward_standardised(x)
        assert standardised.shape == (2,) and standardised.dtype == torch.float32
        assert torch.equal(network(x), standardised)  # default scale: identity
        network.set_target_scale(2.5, 0.25)
        assert torch.allclose(network(x), standardised * 0.25 + 2.5)
    state = network.state_dict()
    assert float(state["target_mean"]) == 2.5 and float(state["target_std"]) == 0.25
    assert network.arch == arch and network.input_size == size
    assert network.options == TINY_STUDENT_OPTIONS[arch]


@pytest.mark.parametrize("arch", STUDENT_ARCHS)
def test_seeded_builds_are_identical(arch):
    first, second, other = (seeded_student(arch, 64, seed) for seed in (0, 0, 1))
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_contract_and_final_map():
    contract = student_contract(64)
    assert (contract.size, contract.channel_order, contract.alignment) == (64, "RGB", "arcface112")
    assert contract.mean == IMAGENET_MEAN and contract.std == IMAGENET_STD
    assert (final_map_size(112), final_map_size(64), final_map_size(100)) == (7, 4, 7)
    for size, kernel in ((112, 7), (64, 4)):
        network = seeded_student("mobilefacenet_student", size)
        assert network.gdconv.depthwise.kernel_size == (kernel, kernel)
        assert network.contract == student_contract(size)


@pytest.mark.parametrize(
    "arch,size,options,words",
    [
        ("resnet9000", 64, None, ["'resnet9000'", "tiny_cnn", "mobilefacenet_student"]),
        ("tiny_cnn", 64, {"depth": 3}, ["'depth'", "width"]),
        ("tiny_cnn", 64, {"width": 0}, ["'width'", "[1, 256]"]),
        ("tiny_cnn", 64, {"width": True}, ["'width'"]),
        ("mobilefacenet_student", 64, {"width_mult": 0.5}, ["'width_mult'", "head_hidden", "init_weights"]),
        ("mobilefacenet_student", 64, {"init_weights": ""}, ["'init_weights'"]),
        ("mobilefacenet_student", 64, {"head": "attention"}, ["'head'", "'mlp'", "'energy'", "'attention'"]),
        ("mobilefacenet_student", 64, {"init_weights": "/nonexistent/mfn.pt"}, ["init_weights", "not found"]),
        ("tiny_cnn", 16, None, ["input_size 16", "64 or 112"]),
        ("mobilefacenet_student", 1024, None, ["input_size 1024"]),
    ],
)
def test_bad_arch_option_or_size_is_named(arch, size, options, words):
    with pytest.raises(ValueError) as info:
        build_student(arch, size, options)
    for word in words:
        assert word in str(info.value)


def test_non_integer_size_and_bad_scale_are_rejected():
    with pytest.raises(TypeError, match="input_size must be an integer"):
        build_student("tiny_cnn", 64.0)
    network = seeded_student("tiny_cnn", 64)
    for mean, std in ((0.0, 0.0), (0.0, -1.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="std > 0"):
            network.set_target_scale(mean, std)


def test_tiny_cnn_size_and_cost_against_mobilefacenet():
    tiny = build_student("tiny_cnn", 112)
    assert 50_000 <= count_params(tiny) <= 200_000
    teacher_flops = count_flops(MobileFaceNet(), 112)
    assert count_flops(tiny, 112) * 10 <= teacher_flops


def _trunk_output(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled 512-d features: conv1 -> dw_conv -> features -> conv2 -> gdconv (same names in both nets)."""
    x = network.features(network.dw_conv(network.conv1(x)))
    return network.gdconv(network.conv2(x)).flatten(1)


def test_init_weights_copies_the_mobilefacenet_trunk(mobilefacenet_pt):
    checkpoint = strip_prefix(read_checkpoint(mobilefacenet_pt), "module.")
    student = build_student("mobilefacenet_student", 112, {"init_weights": str(mobilefacenet_pt)})
    assert student.options == {"init_weights": str(mobilefacenet_pt)}
    report = student.init_report
    state = student.state_dict()
    trunk = [k for k in state if k.split(".")[0] in ("conv1", "dw_conv", "features", "conv2", "gdconv")]
    assert sorted(report["loaded"]) == sorted(trunk)
    assert all(torch.equal(state[k], checkpoint[k]) for k in trunk)
    assert report["skipped_shape"] == []
    assert set(report["not_in_checkpoint"]) == {k for k in state if k.startswith("head.")} | {
        "target_mean",
        "target_std",
    }
    assert "conv3.weight" in report["unused"]

    teacher = MobileFaceNet()
    teacher.load_state_dict(checkpoint)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(_trunk_output(student.eval(), x), _trunk_output(teacher.eval(), x), atol=1e-5)


def test_init_weights_at_64_skips_the_pooling_kernel(mobilefacenet_pt):
    student = build_student("mobilefacenet_student", 64, {"init_weights": str(mobilefacenet_pt)})
    report = student.init_report
    assert report["skipped_shape"] == [
        "gdconv.depthwise.weight: checkpoint (512, 1, 7, 7) vs student (512, 1, 4, 4)"
    ]
    assert "conv1.0.weight" in report["loaded"] and "features.0.conv.0.0.weight" in report["loaded"]


def test_init_weights_from_an_unrelated_checkpoint_fails(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="no tensor .* matches the student"):
        build_student("mobilefacenet_student", 64, {"init_weights": str(path)})


@pytest.mark.parametrize("size", [64, 112])
def test_energy_head_reads_the_log_norm_of_every_trunk_stage(size):
    network = seeded_student("mobilefacenet_student", size, head="energy").eval()
    seen = {}
    network.energy_norm.register_forward_hook(lambda _module, args, _out: seen.update(inputs=args[0]))
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        assert network(x).shape == (3,)
        stages = [network.conv1(x)]
        stages.append(network.dw_conv(stages[-1]))
        for block in network.features:
            stages.append(block(stages[-1]))
        stages.append(network.conv2(stages[-1]))
        pooled = torch.flatten(network.gdconv(stages[-1]), 1)
    squares = torch.stack([t.flatten(1).pow(2).sum(dim=1) for t in [*stages, pooled]], dim=1)
    inputs = seen["inputs"]
    assert inputs.shape == (3, len(network.features) + 4 + 512)
    # log L2 norm, with an epsilon of 1e-6 on the squared norm (a fresh network's late maps are tiny)
    assert torch.allclose(inputs[:, : squares.shape[1]], 0.5 * (squares + 1e-6).log(), atol=1e-4)
    assert torch.equal(inputs[:, squares.shape[1] :], pooled)
    plain = seeded_student("mobilefacenet_student", size)  # the default head: the pooled features only
    assert plain.head[0].in_features == 512 and not hasattr(plain, "energy_norm")
