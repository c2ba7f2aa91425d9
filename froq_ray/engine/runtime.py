"""Ray start-up for jobs: join a cluster when one is named, else start a local one."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

from ..config import ResourcesConfig
from .progress import configure_ray_data_progress, interactive_terminal

log = logging.getLogger("froq_ray")


def ensure_ray(resources: ResourcesConfig) -> None:
    """Connect to ``resources.ray_address`` or start a local Ray (reusing one this process already holds)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        address = resources.ray_address or os.environ.get("RAY_ADDRESS")  # set for `ray job submit` drivers
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
