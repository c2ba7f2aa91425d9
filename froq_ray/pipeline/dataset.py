"""Assemble the one data path every job uses: listing -> read+decode (CPU tasks) -> score (actors).

This is the only module that builds Ray Data datasets. Resources come from the stage configs.
"""

from __future__ import annotations

import pandas as pd

from .stages import DecodeStageConfig, ScoringStage, ScoringStageConfig, read_and_decode


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


def build_dataset(
    rows: pd.DataFrame,
    decode: DecodeStageConfig,
    scoring: ScoringStageConfig,
    ray_batch_size: int,
):
    """A lazy Ray dataset of scored rows, in listing order (the driver writes shards as they complete)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    # one input block per Ray batch: results stream back (and progress is logged) batch by batch
    blocks = [rows.iloc[i : i + ray_batch_size] for i in range(0, max(len(rows), 1), ray_batch_size)]
    ds = ray.data.from_pandas(blocks)
    ds = ds.map_batches(
        read_and_decode,
        fn_kwargs={"cfg": decode},
        batch_size=ray_batch_size,
        batch_format="numpy",
        num_cpus=decode.num_cpus,
    )
    return ds.map_batches(
        ScoringStage,
        fn_constructor_kwargs={"cfg": scoring},
        batch_size=ray_batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=scoring.actors),
        num_gpus=scoring.num_gpus,
        num_cpus=scoring.num_cpus,
    )
