"""`froq_ray.engine.tasks.run_tasks` on the test's local Ray cluster: every item's result once, computed in a
worker process; a task's user error re-raised as its own class naming the item; any other failure a TaskError
naming the item; tasks pinned to a node without the CPUs they ask for are refused up front."""

from __future__ import annotations

import os

import pytest

from froq_ray.config import ResourcesConfig
from froq_ray.engine.tasks import TaskError, TaskResourcesError, run_tasks
from froq_ray.errors import UserError

pytestmark = pytest.mark.usefixtures("ray_cluster")


class BadItemError(UserError, ValueError):
    pass


def square_in_worker(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def fail_on_three(n: int) -> int:
    if n == 3:
        raise BadItemError(f"item {n} is bad")
    if n == 4:
        raise ZeroDivisionError("a bug")
    return n


@pytest.mark.parametrize("on_driver_node", [False, True])
def test_every_item_is_computed_once_in_a_worker(on_driver_node):
    items = list(range(20))
    got = list(
        run_tasks(
            square_in_worker,
            items,
            resources=ResourcesConfig(),
            num_cpus=1,
            on_driver_node=on_driver_node,
            max_in_flight=3,
        )
    )
    assert sorted(item for item, _ in got) == items
    assert all(result == item * item for item, (result, _) in got)
    assert os.getpid() not in {pid for _, (_, pid) in got}


def test_a_user_error_keeps_its_class_and_names_the_item():
    with pytest.raises(BadItemError) as caught:
        list(
            run_tasks(
                fail_on_three, [1, 2, 3], resources=ResourcesConfig(), num_cpus=1, describe=lambda n: f"n={n}"
            )
        )
    assert str(caught.value) == "n=3: item 3 is bad"


def test_any_other_failure_is_a_task_error_naming_the_item():
    with pytest.raises(TaskError) as caught:
        list(
            run_tasks(
                fail_on_three, [4], resources=ResourcesConfig(), num_cpus=1, describe=lambda n: f"n={n}"
            )
        )
    assert str(caught.value).startswith("n=4: ZeroDivisionError: a bug")


def test_tasks_the_driver_node_cannot_fit_are_refused():
    with pytest.raises(TaskResourcesError, match="need 3 CPU"):
        list(run_tasks(square_in_worker, [1], resources=ResourcesConfig(), num_cpus=3, on_driver_node=True))
