"""Ray start-up for jobs: join a cluster when one is named, else start a local one."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

from ..config import ResourcesConfig
from ..errors import UserError
from .progress import configure_ray_data_progress, interactive_terminal

log = logging.getLogger("froq_ray")


class ResourceRequestError(UserError, ValueError):
    """A per-task or per-actor resource request that no node of the local Ray the job starts can ever grant
    (``resources.num_cpus_per_actor=99`` on a 2-CPU machine): Ray would wait for a node that never comes, so the
    job refuses before opening its output. The message names the key, its value and the node's total."""


def cluster_address(resources: ResourcesConfig) -> str | None:
    """The Ray cluster the job joins (``resources.ray_address``, else ``RAY_ADDRESS`` as set for ``ray job
    submit`` drivers); None: the job starts (or reuses) a local Ray."""
    return resources.ray_address or os.environ.get("RAY_ADDRESS") or None


def local_nodes(resources: ResourcesConfig) -> list[dict[str, float]] | None:
    """``[{"CPU": n, "GPU": m}]``, one per node of the local Ray the job runs on; None when it joins a cluster
    (:func:`cluster_address`; a cluster may autoscale). When this process already holds a Ray, its live nodes;
    else the one node :func:`ensure_ray` would start (``resources.num_cpus`` or the CPUs Ray detects; the GPUs
    Ray detects, within ``CUDA_VISIBLE_DEVICES``), found without starting Ray."""
    if cluster_address(resources):
        return None
    import ray

    if ray.is_initialized():
        alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        return [{"CPU": float(n.get("CPU", 0.0)), "GPU": float(n.get("GPU", 0.0))} for n in alive]
    from ray._private.accelerators import get_accelerator_manager_for_resource
    from ray._private.utils import get_num_cpus

    gpus = get_accelerator_manager_for_resource("GPU")
    n_gpus = gpus.get_current_node_num_accelerators()
    visible = gpus.get_current_process_visible_accelerator_ids()  # None: no CUDA_VISIBLE_DEVICES
    if visible is not None:
        n_gpus = min(n_gpus, len(visible))
    return [{"CPU": float(resources.num_cpus or get_num_cpus()), "GPU": float(n_gpus)}]


def check_requests_fit(resources: ResourcesConfig, *, actors: bool = True) -> None:
    """Refuse (:class:`ResourceRequestError`) a request that no node of the local Ray (:func:`local_nodes`)
    can grant: a decode task's ``resources.decode_num_cpus`` CPUs and, with ``actors`` (the job runs scoring
    actors), a scoring actor's ``resources.num_cpus_per_actor`` CPUs and ``num_gpus_per_actor`` GPUs together
    on one node; and with ``actors``, CPUs for the pool's minimum of actors and one decode task at once (the
    local Ray's CPUs less ``resources.headroom_cpus``: else the actors hold every CPU and no image is ever
    decoded). The message names the key that exceeds every node (both keys when each fits some node but no
    node has both; every key of the sum for the last check). Nothing is checked when the job joins a cluster.
    Starts no Ray; call it before the output is opened."""
    nodes = local_nodes(resources)
    if nodes is None:
        return
    bundles = [{"decode_num_cpus": ("CPU", resources.decode_num_cpus)}]
    if actors:
        bundles.append(
            {
                "num_cpus_per_actor": ("CPU", resources.num_cpus_per_actor),
                "num_gpus_per_actor": ("GPU", resources.num_gpus_per_actor),
            }
        )
    for bundle in bundles:
        if any(all(value <= node[kind] for kind, value in bundle.values()) for node in nodes):
            continue
        for key, (kind, value) in bundle.items():
            most = max((node[kind] for node in nodes), default=0.0)
            if value > most:
                raise ResourceRequestError(
                    f"resources.{key}={value:g} is more than the {most:g} {kind}(s) of the largest local Ray "
                    "node this job runs on: Ray would wait forever for a node that never comes (lower it, or "
                    "join a cluster that has or can add such a node with resources.ray_address)"
                )
        asked = " and ".join(f"resources.{key}={value:g}" for key, (_kind, value) in bundle.items())
        raise ResourceRequestError(
            f"{asked}: no node of the local Ray this job runs on has both at once ("
            + "; ".join(f"{n['CPU']:g} CPU(s), {n['GPU']:g} GPU(s)" for n in nodes)
            + "): Ray would wait forever (lower them, or join a cluster with such a node via resources.ray_address)"
        )
    if actors:
        _check_actors_leave_a_decode_slot(resources, nodes)


def _check_actors_leave_a_decode_slot(resources: ResourcesConfig, nodes: list[dict[str, float]]) -> None:
    """The minimum of scoring actors plus one decode task must fit the local Ray's CPUs (less the headroom)."""
    low = resources.actor_range[0]
    need = low * resources.num_cpus_per_actor + resources.decode_num_cpus
    have = sum(node["CPU"] for node in nodes) - resources.headroom_cpus
    if need > have:
        raise ResourceRequestError(
            f"resources.actors (at least {low}) x resources.num_cpus_per_actor={resources.num_cpus_per_actor:g} "
            f"+ resources.decode_num_cpus={resources.decode_num_cpus:g} need {need:g} CPU(s) at once, the local "
            f"Ray has {have:g} (resources.num_cpus less resources.headroom_cpus): the scoring actors would hold "
            "every CPU and no image could be decoded (lower num_cpus_per_actor or decode_num_cpus, or raise "
            "resources.num_cpus: a logical CPU count above the cores is allowed)"
        )


def ensure_ray(resources: ResourcesConfig) -> None:
    """Connect to ``resources.ray_address`` or start a local Ray (reusing one this process already holds)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        address = cluster_address(resources)
        if address:
            log.info("joining Ray cluster at %s", address)
            ray.init(address=address, log_to_driver=True)
        else:
            log.info("starting a local Ray (num_cpus=%s)", resources.num_cpus or "all")
            # address="local": always a private Ray; without it ray.init joins any cluster already running on
            # this machine (another user's `ray start`, with other code on its workers)
            ray.init(address="local", num_cpus=resources.num_cpus, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    # Ray Data's progress bars on an interactive terminal only; froq_ray's own progress lines always (they read
    # well in `ray job logs`), and no "progress bars disabled" warning where the bars are off
    configure_ray_data_progress(ctx, interactive_terminal())


@contextlib.contextmanager
def scoring_context(no_progress_timeout_s: float, headroom_cpus: float):
    """Ray Data settings of a scoring run, restored afterwards:

    - ``execution_no_progress_timeout_s``: finite, so a cluster that cannot make progress (a node lost with no
      replacement) fails the run instead of hanging; a re-run resumes from the written shards;
    - ``exclude_resources``: ``headroom_cpus`` CPUs Ray Data does not schedule its own tasks on, so Ray core can
      rebuild blocks lost with a node;
    - ``preserve_order`` off: shards are committed by the task that writes them, in any order;
    - ``target_max_block_size`` unlimited: a shard stays one block from its read task to its write task."""
    import ray.data
    from ray.data._internal.execution.interfaces import ExecutionResources

    ctx = ray.data.DataContext.get_current()
    before = (
        ctx.execution_no_progress_timeout_s,
        ctx.execution_options.exclude_resources,
        ctx.execution_options.preserve_order,
        ctx.target_max_block_size,
    )
    ctx.execution_no_progress_timeout_s = float(no_progress_timeout_s)
    if headroom_cpus:  # (Ray 2.58 marks the option deprecated in favour of node labels; it still applies)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx.execution_options.exclude_resources = ExecutionResources(cpu=float(headroom_cpus))
    ctx.execution_options.preserve_order = False
    ctx.target_max_block_size = None
    try:
        yield ctx
    finally:
        with warnings.catch_warnings():  # restoring exclude_resources warns like setting it
            warnings.simplefilter("ignore")
            (
                ctx.execution_no_progress_timeout_s,
                ctx.execution_options.exclude_resources,
                ctx.execution_options.preserve_order,
                ctx.target_max_block_size,
            ) = before


def no_progress_error(exc: BaseException | None, timeout_s: float) -> str | None:
    """A one-line description when ``exc`` is Ray Data's no-progress timeout (possibly wrapped), else None."""
    from ray.data.exceptions import ExecutionTimeoutError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ExecutionTimeoutError):
            return (
                f"no shard finished for {timeout_s:g} s (resources.no_progress_timeout_s): the cluster could not "
                "make progress (a lost node with no replacement, or no CPU/GPU left for a stage)"
            )
        exc = exc.__cause__ or exc.__context__
    return None


def object_store_bytes() -> float:
    """The cluster's object store capacity in bytes (Ray must be running)."""
    import ray

    return float(ray.cluster_resources().get("object_store_memory", 0.0))
