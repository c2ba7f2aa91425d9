"""The run's Ray Data settings (no cluster needed): finite no-progress timeout, headroom, no block splitting,
restored afterwards; Ray Data's timeout error is recognised however it is wrapped."""

from __future__ import annotations

import ray.data
from ray.data.exceptions import ExecutionTimeoutError

from froq_ray.engine.runtime import no_progress_error, scoring_context


def test_scoring_context_sets_and_restores_the_data_context():
    ctx = ray.data.DataContext.get_current()
    before = (
        ctx.execution_no_progress_timeout_s,
        ctx.execution_options.preserve_order,
        ctx.target_max_block_size,
        ctx.execution_options.exclude_resources.cpu,
    )
    with scoring_context(42.0, 2.0) as inside:
        assert inside.execution_no_progress_timeout_s == 42.0
        assert inside.execution_options.preserve_order is False
        assert inside.target_max_block_size is None  # a shard stays one block
        assert inside.execution_options.exclude_resources.cpu == 2.0
    after = (
        ctx.execution_no_progress_timeout_s,
        ctx.execution_options.preserve_order,
        ctx.target_max_block_size,
        ctx.execution_options.exclude_resources.cpu,
    )
    assert after == before


def test_the_no_progress_timeout_is_recognised_through_wrapping():
    try:
        try:
            raise ExecutionTimeoutError("Dataset execution made no progress for at least 30s")
        except ExecutionTimeoutError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        line = no_progress_error(outer, 30.0)
    assert line is not None and "30 s (resources.no_progress_timeout_s)" in line and "\n" not in line
    assert no_progress_error(ValueError("other"), 30.0) is None
