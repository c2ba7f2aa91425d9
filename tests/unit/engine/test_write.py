"""The write stage (no Ray): a shard's rows -> its Parquet part + marker, written by the task that has them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from froq_ray import status as st
from froq_ray.engine.stages import columns_to_arrow
from froq_ray.engine.write import ShardAssemblyError, WriteStageConfig, write_shards
from froq_ray.storage.listing import input_digest
from froq_ray.storage.schema import annotation_schema, read_metadata, schema_metadata

DIM = 4


def scored(rows: range, shard: int, start: int, stop: int, bad: set[int] = frozenset()) -> dict:
    """What a scoring actor hands on: rows with their shard bounds, results, and stage seconds."""
    n = len(rows)
    quality = np.array([float(r) if r not in bad else np.nan for r in rows], dtype=np.float32)
    emb = (
        np.tile(np.arange(DIM, dtype=np.float32), (n, 1)) + np.asarray(list(rows), dtype=np.float32)[:, None]
    )
    emb[[i for i, r in enumerate(rows) if r in bad]] = np.nan
    return {
        "row": np.asarray(list(rows), dtype=np.int64),
        "shard": np.full(n, shard, dtype=np.int64),
        "shard_start": np.full(n, start, dtype=np.int64),
        "shard_stop": np.full(n, stop, dtype=np.int64),
        "path": np.asarray([f"/faces/{r:03d}.jpg" for r in rows], dtype=object),
        "identity": np.asarray([None if r % 2 else f"id{r % 3}" for r in rows], dtype=object),
        "status": np.asarray([st.CORRUPT if r in bad else st.OK for r in rows], dtype=object),
        "error": np.asarray(["broken" if r in bad else None for r in rows], dtype=object),
        "width": np.full(n, 112, dtype=np.int32),
        "height": np.full(n, 112, dtype=np.int32),
        "quality": quality,
        "embedding": emb,
        "_t_read": np.full(n, 0.5),
        "_t_decode": np.full(n, 0.25),
        "_t_score": np.full(n, 1.0),
    }


def concat(*batches: dict) -> dict:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.fixture
def cfg(tmp_path):
    schema = annotation_schema(DIM).with_metadata(schema_metadata("d" * 64, "model-x", None))
    constants = {"model_id": "model-x", "calibration_id": None}
    return WriteStageConfig.create(str(tmp_path / "out"), {}, schema, constants, inputs_digest="p" * 64)


def test_each_shard_is_written_whole_with_its_marker(cfg, tmp_path):
    # two shards in one batch, rows shuffled: each is written sorted, under its own deterministic name
    batch = concat(scored(range(5, 8), 1, 5, 8, bad={6}), scored(range(5), 0, 0, 5))
    order = np.random.default_rng(0).permutation(8)
    records = write_shards(columns_to_arrow({k: v[order] for k, v in batch.items()}), cfg).to_pylist()

    assert [(r["shard"], r["start"], r["stop"], r["rows"]) for r in records] == [(0, 0, 5, 5), (1, 5, 8, 3)]
    assert json.loads(records[1]["counts"]) == {st.CORRUPT: 1, st.OK: 2}
    assert records[1]["seconds_read"] == pytest.approx(1.5) and records[1]["seconds_score"] == pytest.approx(
        3.0
    )
    assert records[1]["seconds_write"] > 0
    assert (
        json.loads(records[1]["quality_sample"])[0] == 5.0
        and json.loads(records[1]["quality_sample"])[-1] == 7.0
    )

    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    part = pd.read_parquet(out / "part-00001.parquet")
    assert part["path"].tolist() == ["/faces/005.jpg", "/faces/006.jpg", "/faces/007.jpg"]
    assert part["identity"].isna().tolist() == [True, False, True] and part["identity"][1] == "id0"
    assert part["error"].isna().tolist() == [True, False, True]
    assert part["calibration_id"].isna().all() and (part["model_id"] == "model-x").all()
    assert np.isnan(part["quality"][1]) and part["embedding"][1] is None
    np.testing.assert_array_equal(part["embedding"][2], np.arange(DIM, dtype=np.float32) + 7)
    assert "_t_read" not in part.columns and "row" not in part.columns
    assert read_metadata(pq.read_schema(out / "part-00001.parquet"))["froq_ray.config_digest"] == "d" * 64

    marker = json.loads((out / "_froq" / "part-00001.done.json").read_text())
    expected_digest = input_digest(pd.DataFrame({"path": part["path"], "identity": part["identity"]}))
    assert (marker["start"], marker["stop"], marker["rows"]) == (5, 8, 3)
    assert marker["input_digest"] == expected_digest
    assert marker["counts"] == {st.CORRUPT: 1, st.OK: 2}
    assert marker["inputs_digest"] == "p" * 64  # the listing the shard was made from


def test_a_retried_task_rewrites_the_same_files(cfg, tmp_path):
    batch = columns_to_arrow(scored(range(4), 0, 0, 4))
    write_shards(batch, cfg)
    first = (tmp_path / "out" / "part-00000.parquet").read_bytes()
    write_shards(batch, cfg)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.parquet")) == ["part-00000.parquet"]
    assert (tmp_path / "out" / "part-00000.parquet").read_bytes() == first


@pytest.mark.parametrize("rows", [range(3), range(1, 4)])
def test_a_shard_in_pieces_is_refused_not_written(cfg, tmp_path, rows):
    with pytest.raises(ShardAssemblyError, match="must travel as one block"):
        write_shards(columns_to_arrow(scored(rows, 0, 0, 4)), cfg)
    assert not list(tmp_path.rglob("*.parquet"))
