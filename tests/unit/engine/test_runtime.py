"""The run's Ray Data settings (no cluster needed): finite no-progress timeout, headroom, no block splitting,
restored afterwards; Ray Data's timeout error is recognised however it is wrapped; a resource request no node
of the job's local Ray can grant is refused before Ray starts and before the output is opened."""

from __future__ import annotations

import pytest
import ray
import ray.data
from ray.data.exceptions import ExecutionTimeoutError

from froq_ray.config import ResourcesConfig, config_from_dict
from froq_ray.engine.runner import prepare_run
from froq_ray.engine.runtime import (
    ResourceRequestError,
    check_requests_fit,
    local_nodes,
    no_progress_error,
    scoring_context,
)
from froq_ray.errors import UserError
from froq_ray.pipeline.annotate import OUTPUT


def test_scoring_context_sets_and_restores_the_data_context():
    ctx = ray.data.DataContext.get_current()
    before = (
        ctx.execution_no_progress_timeout_s,
        ctx.execution_options.preserve_order,
        ctx.target_max_block_size,
        ctx.execution_options.exclude_resources.cpu,
    )
    with scoring_context(42.0, 2.0) as inside:
        assert inside.execution_no_progress_timeout_s == 42.0
        assert inside.execution_options.preserve_order is False
        assert inside.target_max_block_size is None  # a shard stays one block
        assert inside.execution_options.exclude_resources.cpu == 2.0
    after = (
        ctx.execution_no_progress_timeout_s,
        ctx.execution_options.preserve_order,
        ctx.target_max_block_size,
        ctx.execution_options.exclude_resources.cpu,
    )
    assert after == before


def test_the_no_progress_timeout_is_recognised_through_wrapping():
    try:
        try:
            raise ExecutionTimeoutError("Dataset execution made no progress for at least 30s")
        except ExecutionTimeoutError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        line = no_progress_error(outer, 30.0)
    assert line is not None and "30 s (resources.no_progress_timeout_s)" in line and "\n" not in line
    assert no_progress_error(ValueError("other"), 30.0) is None


@pytest.fixture
def no_ray_here(monkeypatch):
    """The process holds no Ray (whatever other tests did), no cluster is named, no GPU is visible: the local
    node is what ``ray.init(address="local", num_cpus=...)`` would start."""
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")

    def refuse(*_args, **_kwargs):
        raise AssertionError("the resource check started Ray")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.usefixtures("no_ray_here")
@pytest.mark.parametrize(
    ("key", "value", "total"),
    [
        ("num_cpus_per_actor", 99, "2 CPU(s)"),
        ("num_cpus_per_actor", 2.5, "2 CPU(s)"),
        ("decode_num_cpus", 3, "2 CPU(s)"),
        ("num_gpus_per_actor", 1, "0 GPU(s)"),
        ("num_gpus_per_actor", 0.25, "0 GPU(s)"),
    ],
)
def test_a_request_larger_than_the_local_node_is_refused_naming_the_key(key, value, total):
    resources = ResourcesConfig(num_cpus=2, **{key: value})
    assert local_nodes(resources) == [{"CPU": 2.0, "GPU": 0.0}]
    with pytest.raises(ResourceRequestError) as info:
        check_requests_fit(resources)
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert message.startswith(
        f"resources.{key}={value:g} is more than the {total} of the largest local Ray node "
    )


@pytest.mark.usefixtures("no_ray_here")
def test_requests_that_fit_or_a_joined_cluster_are_not_refused(monkeypatch):
    check_requests_fit(ResourcesConfig(num_cpus=4, num_cpus_per_actor=2, decode_num_cpus=2))  # exactly fits
    check_requests_fit(ResourcesConfig(num_cpus=3, num_cpus_per_actor=2))  # the benchmark's 2 cores + 1
    check_requests_fit(ResourcesConfig(num_cpus=4, num_cpus_per_actor=3.5, decode_num_cpus=0.5))
    # without actors (distill without self-training) only the decode request counts
    check_requests_fit(ResourcesConfig(num_cpus=2, num_cpus_per_actor=99, num_gpus_per_actor=1), actors=False)
    with pytest.raises(ResourceRequestError, match=r"^resources\.decode_num_cpus=3 "):
        check_requests_fit(ResourcesConfig(num_cpus=2, decode_num_cpus=3), actors=False)
    # a joined cluster may autoscale: nothing is checked there
    joined = ResourcesConfig(ray_address="auto", num_cpus_per_actor=99, num_gpus_per_actor=8)
    assert local_nodes(joined) is None
    check_requests_fit(joined)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    check_requests_fit(ResourcesConfig(num_cpus_per_actor=99))


@pytest.mark.usefixtures("no_ray_here")
def test_prepare_run_refuses_before_the_output_is_opened(tmp_path):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    cfg = config_from_dict(
        {"job": "annotate", "input": {"uri": str(tmp_path / "in")}, "output": {"uri": str(out)}},
        ["resources.num_cpus=2", "resources.num_cpus_per_actor=99"],
    )
    with pytest.raises(
        ResourceRequestError, match=r"^resources\.num_cpus_per_actor=99 is more than the 2 CPU"
    ):
        prepare_run(cfg, None, {}, False, layout=OUTPUT)  # the model is never reached
    assert not out.exists()  # no run record, no folder


def test_an_actor_must_fit_one_node_with_both_its_cpus_and_gpus(monkeypatch):
    """A local Ray of several nodes (as ray.cluster_utils.Cluster makes): 8 CPUs without GPU, 4 CPUs with 1."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(
        ray,
        "nodes",
        lambda: [
            {"Alive": True, "Resources": {"CPU": 8.0, "memory": 1e9}},
            {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
            {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # a dead node grants nothing
        ],
    )
    check_requests_fit(ResourcesConfig(num_cpus_per_actor=4, num_gpus_per_actor=1, decode_num_cpus=8))
    check_requests_fit(ResourcesConfig(num_cpus_per_actor=8))
    with pytest.raises(
        ResourceRequestError, match=r"^resources\.num_cpus_per_actor=9 is more than the 8 CPU"
    ):
        check_requests_fit(ResourcesConfig(num_cpus_per_actor=9))
    with pytest.raises(
        ResourceRequestError, match=r"^resources\.num_gpus_per_actor=2 is more than the 1 GPU"
    ):
        check_requests_fit(ResourcesConfig(num_gpus_per_actor=2))
    with pytest.raises(ResourceRequestError) as info:
        check_requests_fit(ResourcesConfig(num_cpus_per_actor=6, num_gpus_per_actor=1))
    assert str(info.value).startswith(
        "resources.num_cpus_per_actor=6 and resources.num_gpus_per_actor=1: no node of the local Ray this job "
        "runs on has both at once (8 CPU(s), 0 GPU(s); 4 CPU(s), 1 GPU(s)): "
    )


@pytest.mark.usefixtures("no_ray_here")
@pytest.mark.parametrize(
    ("settings", "need", "have"),
    [
        ({"num_cpus": 2, "num_cpus_per_actor": 2}, 3, 2),  # the actor takes both CPUs: nothing decodes
        ({"num_cpus": 4, "actors": [2, 4], "num_cpus_per_actor": 2}, 5, 4),
        ({"num_cpus": 4, "num_cpus_per_actor": 2, "decode_num_cpus": 1, "headroom_cpus": 2}, 3, 2),
    ],
)
def test_the_minimum_of_actors_must_leave_cpus_for_a_decode_task(settings, need, have):
    with pytest.raises(ResourceRequestError) as info:
        check_requests_fit(ResourcesConfig(**settings))
    message = str(info.value)
    assert message.startswith("resources.actors (at least ")
    assert f"need {need:g} CPU(s) at once, the local Ray has {have:g}" in message and "\n" not in message
    low = settings.get("actors", [1])[0]
    cfg = ResourcesConfig(**{**settings, "num_cpus": settings["num_cpus"] + need - have})
    check_requests_fit(cfg)  # one more CPU each short: fits
    assert cfg.actor_range[0] == low
