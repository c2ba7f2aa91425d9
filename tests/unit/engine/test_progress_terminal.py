"""Ray Data progress bars only on an interactive terminal, and no "progress bars disabled" warning elsewhere
(issue 13 item 14)."""

from __future__ import annotations

import io
import logging
import os

import pytest

from froq_ray.engine.progress import (
    RAY_DATA_PROGRESS_LOGGER,
    configure_ray_data_progress,
    interactive_terminal,
)


@pytest.fixture()
def terminal():
    """A real pseudo-terminal (its isatty() is the operating system's answer)."""
    leader, follower = os.openpty()
    stream = os.fdopen(follower, "w")
    try:
        yield stream
    finally:
        stream.close()
        os.close(leader)


def test_bars_only_when_stdout_and_stderr_are_terminals(terminal, tmp_path):
    with open(tmp_path / "log.txt", "w") as file:
        assert interactive_terminal(terminal, terminal) is True
        assert interactive_terminal(io.StringIO(), terminal) is False  # stdout piped (e.g. `| tee`)
        assert interactive_terminal(terminal, file) is False  # stderr to a file
        assert interactive_terminal(file, file) is False
    closed = io.StringIO()
    closed.close()
    assert interactive_terminal(closed, terminal) is False  # a closed stream raises ValueError on isatty


def test_configure_sets_the_data_context_and_drops_only_the_setup_notes(monkeypatch):
    from ray.data import DataContext
    from ray.data._internal import progress as ray_progress

    from froq_ray.engine import progress

    assert ray_progress.logger.name == RAY_DATA_PROGRESS_LOGGER  # the logger Ray Data logs those notes on
    ctx = DataContext()
    monkeypatch.setattr(progress, "tqdm_installed", lambda: True)
    assert configure_ray_data_progress(ctx, True) is True and ctx.enable_progress_bars is True
    assert configure_ray_data_progress(ctx, False) is False and ctx.enable_progress_bars is False
    monkeypatch.setattr(progress, "tqdm_installed", lambda: False)  # no tqdm: Ray could draw no bar
    assert configure_ray_data_progress(ctx, True) is False and ctx.enable_progress_bars is False
    logger = logging.getLogger(RAY_DATA_PROGRESS_LOGGER)
    assert len(logger.filters) == 1  # configuring again adds no second filter
    seen: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)  # Ray Data's loggers do not propagate to the root logger
    try:
        logger.warning("Progress bars disabled. To enable, set `...enable_progress_bars = True`.")
        logger.info("[dataset]: A new progress UI is available. To enable, set ...")
        logger.warning("Progress bars for operators disabled. To enable, ...")
    finally:
        logger.removeHandler(handler)
    assert seen == ["Progress bars for operators disabled. To enable, ..."]
