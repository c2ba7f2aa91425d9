"""InputsPlan.ranges on hand-made parts: pieces per part, cumulative row0, the limit, JSON round trip."""

from __future__ import annotations

import pytest

from froq_ray.engine.inputs import InputPart, InputRange, InputsPlan, plan_digest


def make_plan(rows: list[int], total: int | None = None) -> InputsPlan:
    parts = [InputPart(f"part-{i:05d}-00000.parquet", n, f"{i:064x}") for i, n in enumerate(rows)]
    total = sum(rows) if total is None else total
    return InputsPlan(parts, total, plan_digest(parts, total), {"source": "folder", "parts": len(parts)})


def expected_ranges(rows: list[int], shard: int, total: int) -> list[tuple[int, int, int, int]]:
    """Independent model: walk every global row, cut at part ends and every `shard` rows within a part."""
    out: list[list[int]] = []
    row = 0
    for i, n in enumerate(rows):
        for local in range(n):
            if row >= total:
                return [tuple(r) for r in out]
            if local % shard == 0:
                out.append([i, local, local, row])
            out[-1][2] = local + 1
            row += 1
    return [tuple(r) for r in out]


@pytest.mark.parametrize("rows", [[10], [7, 3, 12], [1, 1, 1], [5, 25]])
@pytest.mark.parametrize("shard", [1, 3, 5, 10, 100])
def test_ranges_cover_every_row_once_in_order(rows, shard):
    plan = make_plan(rows)
    got = plan.ranges(shard)
    want = expected_ranges(rows, shard, sum(rows))
    assert [(int(r.part[5:10]), r.start, r.stop, r.row0) for r in got] == want
    assert sum(r.rows for r in got) == sum(rows)
    assert all(0 < r.rows <= shard for r in got)


def test_shard_larger_than_parts_gives_one_range_per_part():
    plan = make_plan([4, 6, 2])
    assert plan.ranges(1000) == [
        InputRange("part-00000-00000.parquet", 0, 4, 0),
        InputRange("part-00001-00000.parquet", 0, 6, 4),
        InputRange("part-00002-00000.parquet", 0, 2, 10),
    ]


@pytest.mark.parametrize("total", [1, 4, 5, 9, 11])
def test_limit_truncates_the_last_range_and_stops(total):
    rows = [4, 6, 2]
    got = make_plan(rows, total).ranges(3)
    assert [(int(r.part[5:10]), r.start, r.stop, r.row0) for r in got] == expected_ranges(rows, 3, total)
    assert sum(r.rows for r in got) == total
    assert got[-1].row0 + got[-1].rows == total


def test_ranges_are_deterministic_and_validate_shard_size():
    plan = make_plan([7, 3, 12], 20)
    assert plan.ranges(4) == plan.ranges(4)
    with pytest.raises(ValueError, match="shard_size"):
        plan.ranges(0)


def test_plan_json_round_trip_and_digest_depends_on_total():
    plan = make_plan([7, 3, 12], 20)
    back = InputsPlan.from_json(plan.to_json())
    assert back == plan and back.ranges(5) == plan.ranges(5)
    assert plan_digest(plan.parts, 20) != plan_digest(plan.parts, 21)
    assert plan_digest(plan.parts, 20) != plan_digest(list(reversed(plan.parts)), 20)


def test_read_range_reads_only_the_row_groups_it_touches(tmp_path, monkeypatch):
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from froq_ray.engine.inputs import INPUTS_DIR, SCHEMA, read_range

    rows = [(f"/d/{i:03d}.jpg", None if i % 3 else f"id{i}") for i in range(23)]
    folder = tmp_path / INPUTS_DIR
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist([{"path": p, "identity": i} for p, i in rows], schema=SCHEMA)
    pq.write_table(table, folder / "part-00000-00000.parquet", row_group_size=5)  # groups of 5: 0-4, 5-9, ...
    read_groups: list[list[int]] = []
    original = pq.ParquetFile.read_row_groups

    def recording(self, groups, *args, **kwargs):
        read_groups.append(list(groups))
        return original(self, groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", recording)
    fs = fsspec.filesystem("file")
    for start, stop, groups in (
        (0, 5, [0]),
        (3, 12, [0, 1, 2]),
        (5, 10, [1]),
        (9, 11, [1, 2]),
        (20, 23, [4]),
        (0, 23, [0, 1, 2, 3, 4]),
    ):
        got = read_range(fs, str(tmp_path), InputRange("part-00000-00000.parquet", start, stop, 100))
        assert got.schema == SCHEMA
        assert (
            list(zip(got.column("path").to_pylist(), got.column("identity").to_pylist(), strict=True))
            == rows[start:stop]
        )
        assert read_groups[-1] == groups
    with pytest.raises(ValueError, match="has 23 rows"):
        read_range(fs, str(tmp_path), InputRange("part-00000-00000.parquet", 20, 24, 0))
