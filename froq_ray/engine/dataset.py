"""The Ray Data graphs: a scoring run (shard descriptors -> read + decode tasks -> scoring actors -> write
tasks, :func:`scoring_dataset`) and the distill job's decoded training rows (:func:`decoded_dataset`).

This is the only module that builds Ray Data datasets. Resources come from the stage configs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .stages import (
    DecodeStageConfig,
    ReadStageConfig,
    ScoringStage,
    ScoringStageConfig,
    read_and_decode,
    read_shard,
)
from .write import WriteStageConfig, write_shards

SCORING_ACTOR_MAX_RESTARTS = -1
"""Scoring actors are restarted by Ray without limit (Ray Data's default; its actor tasks then retry without
limit too), so a run survives losing the node that hosts a scoring actor: the actor is recreated on another
node and its queued blocks are re-run there (tests/integration/test_multinode.py). Measured on Ray 2.58 with a
local multi-node cluster: with ``max_restarts=0`` the same node loss ended the run with
``ActorUnavailableError`` even though a replacement node had been added.

Costs of this choice: Ray core logs one error-level line per scoring actor (``core_worker.cc ... has
constructor arguments in the object store and max_restarts > 0``, ray-project/ray#57733), because Ray Data hands
every pool actor its context and transformer as object-store references; it is noise, not a failure. A block
that crashes its actor process every time (a segfault, an out-of-memory kill) is retried without limit; the run
then ends only when no shard has finished for ``resources.no_progress_timeout_s`` (not measured here), and a
re-run resumes from its completed shards. A block whose scoring raises a Python exception is not retried (a user
error)."""


@dataclass(frozen=True)
class MapStage:
    """A CPU stage between decode and scoring in :func:`scoring_dataset` (e.g. the self-training degradation).

    ``fn(batch, cfg) -> batch`` maps one whole shard as a numpy batch (``dict[str, np.ndarray]``: ``pixels``
    uint8 (N, H, W, 3), ``status``/``error``/``path`` object (N,), ...) to a batch of the same N rows; ``cfg``
    is any picklable value (a frozen dataclass) and travels to the task as ``fn_kwargs``; ``num_cpus`` is the
    Ray CPU request per task. Frozen; raises nothing itself: what ``fn`` raises fails the run (a row's error
    should be written into its ``status``/``error`` instead)."""

    fn: Callable[[dict[str, np.ndarray], Any], dict[str, np.ndarray]]
    cfg: Any
    num_cpus: float = 1.0


def read_decode_keeping(
    batch: dict[str, np.ndarray], cfg: DecodeStageConfig, keep: Sequence[str]
) -> dict[str, np.ndarray]:
    """:func:`read_and_decode`, with the input columns named in ``keep`` carried through unchanged."""
    out = read_and_decode(batch, cfg)
    for name in keep:
        out[name] = batch[name]
    return out


def decoded_dataset(
    rows: pd.DataFrame, decode: DecodeStageConfig, ray_batch_size: int, keep: Sequence[str] = ()
):
    """A lazy Ray dataset of decoded rows (``pixels``, ``status``, ``error``...), in row order; ``keep``
    names extra columns of ``rows`` that travel with them (e.g. a training target)."""
    import ray.data

    # one input block per Ray batch: results stream back (and progress is logged) batch by batch
    blocks = [rows.iloc[i : i + ray_batch_size] for i in range(0, max(len(rows), 1), ray_batch_size)]
    ds = ray.data.from_pandas(blocks)
    return ds.map_batches(
        read_decode_keeping,
        fn_kwargs={"cfg": decode, "keep": tuple(keep)},
        batch_size=ray_batch_size,
        batch_format="numpy",
        num_cpus=decode.num_cpus,
    )


def scoring_dataset(
    shards: Sequence[dict[str, Any]],
    read: ReadStageConfig,
    scoring: ScoringStageConfig,
    write: WriteStageConfig,
    *,
    between: Sequence[MapStage] = (),
    max_tasks_in_flight_per_actor: int | None = None,
):
    """The lazy Ray dataset of one scoring run: shard descriptors -> read + decode (CPU tasks) -> ``between``
    CPU stages -> scoring actors (an autoscaling pool of ``scoring.actors`` = ``(min, max)``) -> write tasks.
    Its rows are the write stage's per-shard records (:func:`froq_ray.engine.write.write_shards`).

    Every stage maps whole blocks (``batch_size=None``) and the source has one shard per block, so a shard is
    one block end to end and the task that writes it has all of its rows; the order of completion does not
    matter (``preserve_order`` stays off)."""
    import ray.data

    ds = ray.data.from_items(list(shards), override_num_blocks=max(len(shards), 1))
    ds = ds.map_batches(
        read_shard, fn_kwargs={"cfg": read}, batch_size=1, batch_format="numpy", num_cpus=read.decode.num_cpus
    )
    for stage in between:
        ds = ds.map_batches(
            stage.fn,
            fn_kwargs={"cfg": stage.cfg},
            batch_size=None,
            batch_format="numpy",
            num_cpus=stage.num_cpus,
        )
    low, high = scoring.actors
    # Whole blocks (a shard each) on the actors too. Ray's public map_batches refuses batch_size=None with GPUs
    # (a block could exceed GPU memory); here a block is a shard whose size the user sets, and the actor splits
    # it into model_batch_size forwards, so the unvalidated entry point Ray Data itself uses for the same reason
    # (map_groups) is taken. A batch size would cut shards into pieces across blocks.
    map_whole_blocks = ds.map_batches_internal if scoring.num_gpus else ds.map_batches
    ds = map_whole_blocks(
        ScoringStage,
        fn_constructor_kwargs={"cfg": scoring},
        batch_size=None,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            min_size=low, max_size=high, max_tasks_in_flight_per_actor=max_tasks_in_flight_per_actor
        ),
        num_gpus=scoring.num_gpus,
        num_cpus=scoring.num_cpus,
        max_restarts=SCORING_ACTOR_MAX_RESTARTS,
    )
    return ds.map_batches(
        write_shards,
        fn_kwargs={"cfg": write},
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=write.num_cpus,
    )
