"""What one benchmark phase costs besides time: peak host RSS, GPU utilisation, peak device memory.

- host: summed RSS of this process and all its descendants (:mod:`froq_ray.bench.proctree`), which includes
  the local Ray cluster (GCS, raylet, workers) the benchmark starts;
- GPU utilisation and memory in use: ``nvidia-smi --query-gpu`` sampled in a thread (the only view that sees
  the Ray actor's memory too, since it runs in another process); ``None`` where there is no nvidia-smi;
- ``torch.cuda.max_memory_allocated`` of this process when CUDA is in use here (the in-process phases).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass

import torch

from .proctree import PeakSampler

MIB = 2**20


def _gpu_line(line: str) -> tuple[float, float]:
    """``"37, 1024"`` -> ``(37.0, 1024.0)``; raises ``ValueError`` for another number of fields."""
    utilisation, memory = line.split(",")
    return float(utilisation), float(memory)


def query_gpus() -> list[tuple[float, float]] | None:
    """(utilisation %, memory used MiB) per visible GPU, or None when nvidia-smi is absent or fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        return [_gpu_line(line) for line in text.strip().splitlines()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


class GpuSampler:
    """Samples :func:`query_gpus` every ``interval`` s; keeps the utilisation samples and the memory peak."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.utilisation: list[float] = []
        self.peak_memory_mib = 0.0
        self.available = query_gpus() is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            gpus = query_gpus()
            if gpus:
                self.utilisation.append(max(u for u, _ in gpus))
                self.peak_memory_mib = max(self.peak_memory_mib, max(m for _, m in gpus))
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuSampler:  # noqa: PYI034 (typing.Self needs Python 3.11)
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass(frozen=True)
class PhaseResources:
    peak_host_rss_mib: float
    gpu_util_mean: float | None  # % over the samples taken while the phase ran
    gpu_util_max: float | None
    peak_gpu_memory_used_mib: float | None  # nvidia-smi, whole GPU (all processes)
    peak_torch_allocated_mib: float | None  # this process only

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(v, 1)) for k, v in self.__dict__.items()}


class ResourceMonitor:
    """``with ResourceMonitor() as m: ...`` then ``m.result`` (a :class:`PhaseResources`)."""

    def __init__(self, rss_interval: float = 0.2, gpu_interval: float = 0.2) -> None:
        self._rss = PeakSampler(os.getpid(), rss_interval)
        self._gpu = GpuSampler(gpu_interval)
        self._cuda = torch.cuda.is_available()
        self.result: PhaseResources | None = None

    def __enter__(self) -> ResourceMonitor:  # noqa: PYI034 (typing.Self needs Python 3.11)
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        self._rss.__enter__()
        self._gpu.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._gpu.__exit__(*exc)
        self._rss.__exit__(*exc)
        util = self._gpu.utilisation
        self.result = PhaseResources(
            peak_host_rss_mib=self._rss.peak_tree / MIB,
            gpu_util_mean=sum(util) / len(util) if util else None,
            gpu_util_max=max(util) if util else None,
            peak_gpu_memory_used_mib=self._gpu.peak_memory_mib if self._gpu.available else None,
            peak_torch_allocated_mib=torch.cuda.max_memory_allocated() / MIB if self._cuda else None,
        )
