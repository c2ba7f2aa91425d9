"""Periodic progress lines that read well in `ray job logs`, and the final run summary."""

from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np

log = logging.getLogger("froq_ray")


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressReporter:
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
        self.done += len(statuses)
        self.counts.update(str(s) for s in statuses)
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
