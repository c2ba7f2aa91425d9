"""Periodic progress lines that read well in `ray job logs`, and the final run summary."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections import Counter
from typing import TextIO

import numpy as np

log = logging.getLogger("froq_ray")


def interactive_terminal(stdout: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """True when both ``stdout`` and ``stderr`` (default: ``sys.stdout`` / ``sys.stderr``) are interactive
    terminals: then Ray Data's progress bars (drawn on stderr) are shown. A pipe, a file, ``ray job logs``
    or a captured test run gets froq_ray's periodic log lines only (Ray Data would log its own progress lines
    into a non-terminal stdout). A stream without ``isatty`` (or one that is closed) counts as not a terminal."""
    streams = (sys.stdout if stdout is None else stdout, sys.stderr if stderr is None else stderr)
    try:
        return all(stream is not None and stream.isatty() for stream in streams)
    except (AttributeError, ValueError):
        return False


class _DropProgressSetupNotes(logging.Filter):
    """Drops Ray Data's notes about the progress display froq_ray chose: "Progress bars disabled" (froq_ray
    turns them off on purpose off a terminal and logs its own progress) and the advertisement of its newer
    progress UI."""

    DROPPED = ("Progress bars disabled", "[dataset]: A new progress UI is available")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROPPED)


RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"
"""The logger of Ray Data (2.58) that logs those notes."""


def tqdm_installed() -> bool:
    """Ray Data draws its progress bars with tqdm; without it there are none (Ray would only warn)."""
    return importlib.util.find_spec("tqdm") is not None


def configure_ray_data_progress(ctx, interactive: bool) -> bool:
    """Turn Ray Data's progress bars on ``ctx`` (a ``DataContext``) on exactly when ``interactive`` and tqdm is
    installed, and filter out Ray's notes about that choice (idempotent). froq_ray's own progress lines
    (:class:`ProgressReporter`) are logged either way. Returns whether the bars are on."""
    ctx.enable_progress_bars = bool(interactive) and tqdm_installed()
    logger = logging.getLogger(RAY_DATA_PROGRESS_LOGGER)
    if not any(isinstance(f, _DropProgressSetupNotes) for f in logger.filters):
        logger.addFilter(_DropProgressSetupNotes())
    return ctx.enable_progress_bars


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressReporter:
    """Counts finished rows by status on the driver and logs one progress line every ``interval_s`` seconds.

    ``total``: ``int`` rows the run will write; ``done``: rows counted so far; ``counts``: ``Counter[str]``
    rows per status (``ok`` and the failure statuses of :mod:`froq_ray.status`); ``clock``: a monotonic
    ``() -> float`` in seconds (injected by tests). Logs through the ``froq_ray`` logger; raises nothing.
    """

    def __init__(
        self, total: int, interval_s: float = 30.0, label: str = "rows", clock=time.monotonic
    ) -> None:
        self.total = total
        self.interval_s = interval_s
        self.label = label
        self.clock = clock
        self.started = clock()
        self.last_report = self.started
        self.done = 0
        self.counts: Counter[str] = Counter()

    def update(self, statuses) -> None:
        """Count one status per row (a unit test's batch of rows)."""
        self.add(Counter(str(s) for s in statuses))

    def add(self, counts: dict[str, int]) -> None:
        """Count a finished shard's rows by status (what a write task reports); logs a line every interval."""
        self.done += sum(counts.values())
        self.counts.update(counts)
        now = self.clock()
        if now - self.last_report >= self.interval_s:
            self.last_report = now
            log.info(self.line(now))

    def rate(self, now: float | None = None) -> float:
        elapsed = (now if now is not None else self.clock()) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        rate = self.rate(now)
        remaining = self.total - self.done
        eta = _fmt_duration(remaining / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        bad = sum(v for k, v in self.counts.items() if k != "ok")
        return (
            f"progress: {self.done:,}/{self.total:,} {self.label} ({pct:.1f}%), {rate:,.1f} images/s, "
            f"ETA {eta}, not ok so far: {bad:,}"
        )

    def elapsed(self) -> float:
        return self.clock() - self.started


def quality_quantiles(values: np.ndarray, qs=(0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {}
    return {f"p{int(q * 100):02d}": float(np.quantile(finite, q)) for q in qs}
