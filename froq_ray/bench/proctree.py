"""Memory (sampled in a background thread) and CPU time of a process and all its descendants (Linux /proc).

Ray's processes (GCS, raylet, workers) started by a job's driver are its descendants, so the summed RSS of the
tree is what the whole job holds on this machine, and its CPU seconds are what the whole job spent.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children = _children_map()
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def tree_rss(root: int) -> tuple[int, int]:
    """(RSS of ``root``, summed RSS of ``root`` and all its descendants) in bytes."""
    return _rss_bytes(root), sum(_rss_bytes(pid) for pid in _tree(root))


def tree_cpu_seconds(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds) of ``root`` and each descendant alive now: user + system time of the
    process plus that of its children it has reaped (``/proc/<pid>/stat`` fields 14-17, in clock ticks).
    Processes that end unreaped between two calls are not counted."""
    out = {}
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[pid] = (command.strip(), sum(int(f) for f in fields[11:15]) / TICKS)
    return out


class PeakSampler:
    """Samples ``tree_rss(pid)`` every ``interval`` seconds until stopped; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.peak_root = self.peak_tree = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            root, tree = tree_rss(self.pid)
            self.peak_root, self.peak_tree = max(self.peak_root, root), max(self.peak_tree, tree)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
