"""The driver-side shard assembler: exactly one row per input, whatever order and shape batches arrive in."""

from __future__ import annotations

import numpy as np
import pytest

from froq_ray.engine.writer import IncompleteRunError, ShardAssembler
from froq_ray.storage.shards import plan_shards


def batch(rows, scored: bool) -> dict[str, np.ndarray]:
    rows = np.asarray(rows)
    out = {"row": rows, "shard": rows // 4, "status": np.array(["ok" if scored else "corrupt"] * len(rows), object)}
    if scored:
        out["quality"] = rows.astype(np.float32)
        out["embedding"] = np.tile(rows[:, None], (1, 3)).astype(np.float32)
    return out


def test_batches_without_scored_rows_get_nan_results_and_shards_are_sorted():
    written = {}
    asm = ShardAssembler(plan_shards(6, 4), lambda shard, cols: written.__setitem__(shard.index, cols))
    asm.consume(batch([2, 3], scored=False))  # every row failed upstream: no result columns at all
    asm.consume(batch([1, 0, 5], scored=True))
    assert list(written) == [0]
    asm.consume(batch([4], scored=False))
    asm.finish()
    first = written[0]
    np.testing.assert_array_equal(first["row"], [0, 1, 2, 3])
    np.testing.assert_array_equal(first["quality"][:2], [0, 1])
    assert np.isnan(first["quality"][2:]).all() and np.isnan(first["embedding"][2:]).all()
    assert first["embedding"].shape == (4, 3)
    np.testing.assert_array_equal(written[1]["row"], [4, 5])
    assert np.isnan(written[1]["quality"][0]) and written[1]["quality"][1] == 5


def test_duplicate_and_missing_rows_are_errors():
    asm = ShardAssembler(plan_shards(4, 4), lambda shard, cols: None)
    asm.consume(batch([0, 1], scored=True))
    with pytest.raises(IncompleteRunError, match="missing"):
        asm.finish()
    with pytest.raises(IncompleteRunError, match="not exactly 0..3"):
        asm.consume(batch([1, 2], scored=True))  # row 1 twice, row 3 never
    with pytest.raises(IncompleteRunError, match="received rows for shard 7"):
        asm.consume({"row": np.array([28]), "shard": np.array([7]), "status": np.array(["ok"], object)})
