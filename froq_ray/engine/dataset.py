"""Assemble the one data path every job uses: listing -> read+decode (CPU tasks) -> score (actors).

This is the only module that builds Ray Data datasets. Resources come from the stage configs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .stages import DecodeStageConfig, ScoringStage, ScoringStageConfig, read_and_decode

SCORING_ACTOR_MAX_RESTARTS = 0
"""Scoring actors are not restarted by Ray. Ray Data (2.58) hands every pool actor its context and transformer
as object-store references, and Ray core logs an error-level line (``core_worker.cc ... has constructor
arguments in the object store and max_restarts > 0``, ray-project/ray#57733) for any restartable actor created
that way, whatever froq_ray passes. Ray Data's default (endless restarts with endless task retries) would also
retry a batch that crashes its actor process forever. Without restarts an actor that dies (a crash, an
out-of-memory kill) ends the run with Ray's error; the run then resumes from its completed shards. An actor
that fails while starting is still replaced by Ray Data (``DataContext.max_consecutive_actor_init_deaths``)."""


@dataclass(frozen=True)
class MapStage:
    """A CPU stage between decode and scoring: ``fn(batch, cfg) -> batch`` on numpy batches."""

    fn: Callable[[dict[str, np.ndarray], Any], dict[str, np.ndarray]]
    cfg: Any
    num_cpus: float = 1.0


def rows_for_shards(listing: pd.DataFrame, shards) -> pd.DataFrame:
    """The listing rows of the given shards, with their global ``row`` and ``shard`` indices."""
    parts = []
    for s in shards:
        part = listing.iloc[s.start : s.stop][["path", "identity"]].copy()
        part.insert(0, "shard", s.index)
        part.insert(0, "row", range(s.start, s.stop))
        parts.append(part)
    if not parts:
        return pd.DataFrame({"row": [], "shard": [], "path": [], "identity": []})
    rows = pd.concat(parts, ignore_index=True)
    rows["identity"] = rows["identity"].astype(object).where(rows["identity"].notna(), None)
    return rows


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


def build_dataset(
    rows: pd.DataFrame,
    decode: DecodeStageConfig,
    scoring: ScoringStageConfig,
    ray_batch_size: int,
    between: Sequence[MapStage] = (),
):
    """A lazy Ray dataset of scored rows, in listing order (the driver writes shards as they complete);
    ``between``: CPU stages applied to the decoded rows before scoring."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = decoded_dataset(rows, decode, ray_batch_size)
    for stage in between:
        ds = ds.map_batches(
            stage.fn,
            fn_kwargs={"cfg": stage.cfg},
            batch_size=ray_batch_size,
            batch_format="numpy",
            num_cpus=stage.num_cpus,
        )
    return ds.map_batches(
        ScoringStage,
        fn_constructor_kwargs={"cfg": scoring},
        batch_size=ray_batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=scoring.actors),
        num_gpus=scoring.num_gpus,
        num_cpus=scoring.num_cpus,
        max_restarts=SCORING_ACTOR_MAX_RESTARTS,
    )
