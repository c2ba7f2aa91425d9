"""Plain Ray tasks over a list of work items, for jobs whose work is not a Ray Data graph (the export job).

The driver plans the items and commits what the tasks return; each task does the reading and writing of its
item on a worker. :func:`run_tasks` keeps a bounded number of tasks in flight, so the driver holds at most a
few small results at a time, and yields each result as its task completes.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ..config import ResourcesConfig
from ..errors import UserError
from .runtime import ensure_ray

log = logging.getLogger("froq_ray")

Item = TypeVar("Item")
Result = TypeVar("Result")

IN_FLIGHT_PER_SLOT = 2
"""Tasks submitted per task the cluster can run at once (one queued behind each running one)."""


class TaskError(RuntimeError):
    """A task failed on something other than a user error (a bug, a worker lost beyond Ray's retries); the
    message names the item and the cause (Ray's error, with the worker's traceback, is ``__cause__``)."""


class TaskResourcesError(UserError, ValueError):
    """The tasks ask for more CPUs than the node they must run on has: they could never be scheduled."""


def run_tasks(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    *,
    resources: ResourcesConfig,
    num_cpus: float,
    describe: Callable[[Item], str] = str,
    on_driver_node: bool = False,
    num_cpus_key: str = "num_cpus",
    max_in_flight: int | None = None,
) -> Iterator[tuple[Item, Result]]:
    """Run ``fn(item)`` as one Ray task per item; yield ``(item, result)`` as the tasks complete (in any order).

    Ray is started or joined with :func:`~froq_ray.engine.runtime.ensure_ray` (``resources.ray_address``,
    ``resources.num_cpus``). ``fn`` must be picklable (a module-level function) and so must each item and
    result; keep results small: the driver receives every one. ``num_cpus``: Ray CPUs per task.
    ``on_driver_node``: run every task on the driver's node (the items name local files that only this node
    has). ``num_cpus_key``: the setting ``num_cpus`` comes from, named in the errors. ``max_in_flight``:
    tasks submitted and not yet collected at any time; default
    :data:`IN_FLIGHT_PER_SLOT` times the tasks the cluster (or the driver's node) can run at once. A task that
    fails with a system error (its worker died) is retried by Ray, so ``fn`` must be idempotent (rewrite its
    own outputs).

    Raises, for the first task that fails (the tasks not yet finished are cancelled): the task's own
    :class:`~froq_ray.errors.UserError` with ``describe(item)`` prefixed to its message (same class);
    :class:`TaskError` naming the item for any other failure; :class:`TaskResourcesError` as
    :func:`check_task_resources` (checked before any task is submitted; a caller that must not start writing
    before the check calls that function first); ``ValueError`` for ``num_cpus <= 0`` or
    ``max_in_flight < 1``."""
    if num_cpus <= 0:
        raise ValueError(f"{num_cpus_key} must be > 0, got {num_cpus}")
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    if not items:
        return
    import ray

    options, cpus = check_task_resources(
        resources, num_cpus, on_driver_node=on_driver_node, num_cpus_key=num_cpus_key
    )
    limit = max_in_flight or IN_FLIGHT_PER_SLOT * max(1, int(cpus // num_cpus))
    remote = ray.remote(fn).options(**options)
    pending: dict[Any, Item] = {}
    queue = iter(items)
    try:
        while True:
            for item in queue:
                pending[remote.remote(item)] = item
                if len(pending) >= limit:
                    break
            if not pending:
                return
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                named = _named(exc, describe(item))
                raise named from (None if isinstance(named, UserError) else exc)
            yield item, result
    finally:
        for ref in pending:  # an error (or the caller stopped early): the queued tasks are not needed
            ray.cancel(ref)


def check_task_resources(
    resources: ResourcesConfig,
    num_cpus: float,
    *,
    on_driver_node: bool = False,
    num_cpus_key: str = "num_cpus",
) -> tuple[dict[str, Any], float]:
    """Check that tasks of ``num_cpus`` Ray CPUs each can ever be scheduled, starting or joining Ray
    (:func:`~froq_ray.engine.runtime.ensure_ray`); run it before writing anything that a refusal would leave
    behind. Returns the Ray task options (``num_cpus``, and with ``on_driver_node`` a hard node-affinity
    scheduling strategy for the driver's node) and the CPUs the tasks can use at once (the cluster's, or the
    driver's node's with ``on_driver_node``).

    Raises :class:`TaskResourcesError` naming ``num_cpus_key`` when ``on_driver_node`` and the driver's node
    has fewer than ``num_cpus`` CPUs; ``ValueError`` for ``num_cpus <= 0``."""
    if num_cpus <= 0:
        raise ValueError(f"{num_cpus_key} must be > 0, got {num_cpus}")
    import ray

    ensure_ray(resources)
    options: dict[str, Any] = {"num_cpus": num_cpus}
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if on_driver_node:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = ray.get_runtime_context().get_node_id()
        cpus = next(
            (
                float(n["Resources"].get("CPU", 0.0))
                for n in ray.nodes()
                if n["NodeID"] == node_id and n["Alive"]
            ),
            0.0,
        )
        if cpus < num_cpus:
            raise TaskResourcesError(
                f"{num_cpus_key}={num_cpus:g}: the tasks need {num_cpus:g} CPU(s) each and must run on the "
                f"driver's node (local files), which has {cpus:g}: lower {num_cpus_key} or run the driver on "
                "a node with more CPUs"
            )
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return options, cpus


def _named(exc: BaseException, name: str) -> BaseException:
    """The exception to raise for a failed task: its UserError as itself with ``name`` prefixed, else a
    :class:`TaskError`."""
    cause = getattr(exc, "cause", None) or exc  # RayTaskError.cause: what the task raised
    if isinstance(cause, UserError) and type(cause).__str__ is BaseException.__str__:
        named = copy.copy(cause)
        named.args = (f"{name}: {cause}",)
        return named.with_traceback(None)
    return TaskError(f"{name}: {type(cause).__name__}: {cause}")
