"""Shard planning, shard writer and completion markers (local disk and the local S3)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from froq_ray.storage.fs import open_fs
from froq_ray.storage.schema import annotation_schema, to_table
from froq_ray.storage.shards import Shard, list_names, read_markers, write_shard
from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)


def test_shard_file_names_come_from_the_index():
    # (how rows are cut into shards: tests/unit/engine/test_inputs_ranges.py)
    assert Shard(3, 0, 1).part_name == "part-00003.parquet"
    assert Shard(123456, 0, 1).marker_name == "part-123456.done.json"
    assert Shard(7, 0, 1).marker_path == "_froq/part-00007.done.json"
    assert Shard(2, 20, 25).rows == 5


def small_table(statuses: list[str]):
    n = len(statuses)
    columns = {
        "path": [f"/in/{i}.jpg" for i in range(n)],
        "identity": [None] * n,
        "status": statuses,
        "error": [None if s == "ok" else "bad" for s in statuses],
        "quality": [1.5] * n,
        "width": [112] * n,
        "height": [112] * n,
        "model_id": ["m"] * n,
        "calibration_id": ["c"] * n,
    }
    return to_table(columns, annotation_schema(None, []))


def check_written(fs, out_dir: str, shard: Shard, table, marker: dict) -> None:
    assert marker == {
        "shard": shard.index,
        "start": shard.start,
        "stop": shard.stop,
        "rows": table.num_rows,
        "counts": {"corrupt": 1, "ok": 2},
        "input_digest": "abc",
        "schema_version": "1",
        "file": shard.part_name,
        "bytes": fs.size(f"{out_dir}/{shard.part_name}"),  # the part's size, checked on resume
        "written_at": marker["written_at"],
    }
    with fs.open(f"{out_dir}/{shard.marker_path}", "rb") as f:
        assert json.load(f) == marker
    with fs.open(f"{out_dir}/{shard.part_name}", "rb") as f:
        df = pd.read_parquet(f)
    assert df["path"].tolist() == table.column("path").to_pylist()
    assert list_names(fs, out_dir) == [
        shard.part_name
    ]  # the marker is in _froq/, out of Parquet readers' way
    assert list_names(fs, f"{out_dir}/_froq") == [shard.marker_name]
    assert read_markers(fs, out_dir) == {shard.index: marker}


def test_write_shard_local(tmp_path):
    fs, out_dir = open_fs(str(tmp_path / "out"))
    fs.makedirs(out_dir)
    shard = Shard(2, 20, 23)
    table = small_table(["ok", "corrupt", "ok"])
    marker = write_shard(fs, out_dir, shard, table, shard_input_digest="abc")
    check_written(fs, out_dir, shard, table, marker)


def test_write_shard_s3(s3):  # noqa: F811 - the s3 fixture imported above
    fs, out_dir = open_fs(s3.uri("out"), s3.storage_options)
    shard = Shard(0, 0, 3)
    table = small_table(["corrupt", "ok", "ok"])
    marker = write_shard(fs, out_dir, shard, table, shard_input_digest="abc")
    check_written(fs, out_dir, shard, table, marker)


def test_row_count_must_match_shard(tmp_path):
    fs, out_dir = open_fs(str(tmp_path))
    with pytest.raises(ValueError, match="shard 0 has 2 rows, expected 3"):
        write_shard(fs, out_dir, Shard(0, 0, 3), small_table(["ok", "ok"]), shard_input_digest="abc")
    assert list(tmp_path.iterdir()) == []


def test_marker_is_written_after_the_part(tmp_path, monkeypatch):
    """If the part write fails, no marker may exist (the shard stays pending)."""
    fs, out_dir = open_fs(str(tmp_path))
    calls = []
    original = fs.pipe_file

    def failing_pipe(path, _data, **_kw):
        calls.append(path)
        raise OSError("disk full")

    monkeypatch.setattr(fs, "pipe_file", failing_pipe)
    with pytest.raises(OSError, match="disk full"):
        write_shard(fs, out_dir, Shard(0, 0, 1), small_table(["ok"]), shard_input_digest="abc")
    monkeypatch.setattr(fs, "pipe_file", original)
    assert len(calls) == 1 and "part-00000.parquet" in calls[0]
    assert read_markers(fs, out_dir) == {} and list(tmp_path.iterdir()) == []
