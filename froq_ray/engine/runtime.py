"""Ray start-up for jobs: join a cluster when one is named, else start a local one."""

from __future__ import annotations

import logging
import os

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
            ray.init(num_cpus=resources.num_cpus, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    # Ray Data's progress bars on an interactive terminal only; froq_ray's own progress lines always (they read
    # well in `ray job logs`), and no "progress bars disabled" warning where the bars are off
    configure_ray_data_progress(ctx, interactive_terminal())
    ctx.execution_options.preserve_order = True  # shards complete one after another: flat memory, fixed files
    # Ray Data aborts a dataset after 30 min without a finished block; a batch of the 76-pass perturbation modes
    # can legitimately take that long on a CPU. froq_ray logs its own progress instead.
    ctx.execution_no_progress_timeout_s = -1


def object_store_bytes() -> float:
    """The cluster's object store capacity in bytes (Ray must be running)."""
    import ray

    return float(ray.cluster_resources().get("object_store_memory", 0.0))
