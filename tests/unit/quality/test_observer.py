"""NormObserver: hook norms vs explicitly materialised activations, call semantics, truncated forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from froq_ray.quality.observer import (
    NormObserver,
    StopPoint,
    candidate_layers,
    probe_stop_point,
    stop_point_from_order,
)
from tests.tiny_models import (
    flat_norms,
    manual_activations,
    tiny_model_fixture,  # noqa: F401  (the module fixture ``model``)
    tiny_network_input,
)


@pytest.fixture(scope="module")
def x(model):
    return tiny_network_input(model, 6, seed=1)


def observe(network, names, x, stop_at=None):
    with torch.inference_mode(), NormObserver(network, names, stop_at) as obs:
        out = obs.forward(x)
        return out, obs.norms(), obs.call_counts(), obs.execution_order()


def test_candidate_layers_are_named_modules_minus_root_with_containers(model):
    names = candidate_layers(model.network)
    assert names == [n for n, _ in model.network.named_modules()][1:]
    assert "" not in names
    assert {"stem", "block", "down", "head"} <= set(names)  # containers included
    assert names.index("stem") < names.index("stem.0")  # named order, parent first


def test_hook_norms_equal_norms_of_materialised_activations(model, x):
    truth = manual_activations(model.network, x)
    out, norms, _, _ = observe(model.network, candidate_layers(model.network), x)
    assert set(norms) == set(truth)
    for name, outputs in truth.items():
        assert norms[name].dtype == torch.float32
        torch.testing.assert_close(norms[name].double(), flat_norms(outputs[-1]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, truth["head"][0])


def test_in_place_modification_after_the_module_does_not_change_its_norm(model, x):
    # block.bn2's output is modified by `y += x` right after bn2 returns; the recorded norm must be the
    # value bn2 produced. A hook that only keeps a reference (and takes the norm after forward) is wrong.
    truth = manual_activations(model.network, x)
    kept = {}
    handle = model.network.block.bn2.register_forward_hook(lambda _m, _i, o: kept.setdefault("ref", o))
    with torch.no_grad():
        model.network(x)
    handle.remove()
    naive = flat_norms(kept["ref"])
    correct = flat_norms(truth["block.bn2"][0])
    assert not torch.allclose(naive, correct, rtol=1e-3)  # the trap is real in this model
    _, norms, _, _ = observe(model.network, ["block.bn2"], x)
    torch.testing.assert_close(norms["block.bn2"].double(), correct, rtol=1e-5, atol=1e-6)


def test_module_called_twice_counts_its_last_call(model, x):
    truth = manual_activations(model.network, x)
    assert len(truth["block.act"]) == 2
    _, norms, calls, order = observe(model.network, ["block.act", "stem.2"], x)
    assert calls == {"stem.2": 1, "block.act": 2}
    assert order == [("stem.2", 1), ("block.act", 1), ("block.act", 2)]
    last, first = flat_norms(truth["block.act"][1]), flat_norms(truth["block.act"][0])
    torch.testing.assert_close(norms["block.act"].double(), last, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(norms["block.act"].double(), first, rtol=1e-3)


def test_state_resets_per_forward_and_hooks_are_removed(model, x):
    with torch.inference_mode(), NormObserver(model.network, ["block.act"]) as obs:
        obs.forward(x)
        model.network(x[:2])  # a plain call is observed too
        assert obs.call_counts() == {"block.act": 2}
        assert obs.norms()["block.act"].shape == (2,)
    for module in model.network.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_uncalled_modules_are_absent_and_tuple_outputs_use_first_tensor():
    class Pair(nn.Module):
        def forward(self, v):
            return v * 2, v * 100

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.unused = nn.Linear(3, 3)

        def forward(self, v):
            return self.pair(v)[0] + 1

    v = torch.arange(12.0).reshape(2, 6)
    _, norms, calls, _ = observe(Net(), ["pair", "unused"], v)
    assert "unused" not in norms and "unused" not in calls
    torch.testing.assert_close(norms["pair"], (v * 2).norm(dim=1))


def test_unknown_layer_names_raise(model):
    with pytest.raises(KeyError, match="no_such_layer"):
        NormObserver(model.network, ["stem", "no_such_layer"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_norms_are_float32_and_close(model, x, dtype):
    _, full, _, _ = observe(model.network, ["block.conv2"], x)
    with (
        torch.inference_mode(),
        torch.autocast("cpu", dtype=dtype),
        NormObserver(model.network, ["block.conv2"]) as obs,
    ):
        obs.forward(x)
        low = obs.norms()["block.conv2"]
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, full["block.conv2"], rtol=3e-2, atol=1e-3)


def test_stop_point_from_order_uses_last_call_and_execution_order():
    order = [("b", 1), ("a", 1), ("c", 1), ("b", 2), ("d", 1)]
    assert stop_point_from_order(order, ["a", "b"]) == StopPoint("b", 2)
    assert stop_point_from_order(order, ["a", "c"]) == StopPoint("c", 1)
    with pytest.raises(ValueError, match="zz"):
        stop_point_from_order(order, ["a", "zz"])


def test_probe_finds_deepest_by_execution_not_by_name():
    class Net(nn.Module):  # defined (named) in reverse of execution order
        def __init__(self):
            super().__init__()
            self.late = nn.Linear(4, 4)
            self.early = nn.Linear(4, 4)

        def forward(self, v):
            return self.late(torch.relu(self.early(v)))

    net = Net()
    assert candidate_layers(net) == ["late", "early"]
    assert probe_stop_point(net, ["late", "early"], torch.zeros(1, 4)) == StopPoint("late", 1)
    assert probe_stop_point(net, ["early"], torch.zeros(1, 4)) == StopPoint("early", 1)


def test_truncated_forward_gives_same_norms_and_skips_later_modules(model, x):
    selected = ["stem", "block.act", "block.conv1"]
    stop = probe_stop_point(model.network, selected, x[:1])
    assert stop == StopPoint("block.act", 2)
    _, full, _, _ = observe(model.network, selected, x)
    later = []
    handle = model.network.down.register_forward_hook(lambda *_: later.append(1))
    try:
        out, truncated, calls, _ = observe(model.network, selected, x, stop_at=stop)
    finally:
        handle.remove()
    assert out is None
    assert later == []  # nothing after the stop point ran
    assert calls["block.act"] == 2
    for name in selected:
        torch.testing.assert_close(truncated[name], full[name], rtol=0, atol=0)
