"""Resource monitor: nvidia-smi parsing (absent / fake binary), GPU peaks, and the host RSS peak of a phase."""

from __future__ import annotations

import os
import stat
import time

import numpy as np

from froq_ray.bench import monitor
from froq_ray.bench.monitor import GpuSampler, ResourceMonitor, query_gpus

FAKE_SMI = """#!/bin/sh
printf '37, 1024\\n55, 2048\\n'
"""


def _fake_nvidia_smi(tmp_path, monkeypatch) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text(FAKE_SMI)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_no_nvidia_smi_means_no_gpu_numbers(monkeypatch):
    monkeypatch.setattr(monitor.shutil, "which", lambda _name: None)
    assert query_gpus() is None
    with ResourceMonitor() as m:
        pass
    assert m.result.gpu_util_mean is None and m.result.peak_gpu_memory_used_mib is None


def test_nvidia_smi_output_is_parsed_and_peaks_kept(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch)
    assert query_gpus() == [(37.0, 1024.0), (55.0, 2048.0)]
    with GpuSampler(interval=0.01) as sampler:
        time.sleep(0.2)
    assert sampler.utilisation and set(sampler.utilisation) == {55.0}  # the busiest GPU per sample
    assert sampler.peak_memory_mib == 2048.0


def test_host_rss_peak_sees_a_temporary_allocation():
    with ResourceMonitor(rss_interval=0.02) as idle:
        time.sleep(0.2)
    with ResourceMonitor(rss_interval=0.02) as busy:
        block = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MiB, touched
        time.sleep(0.3)
        del block
    assert busy.result.peak_host_rss_mib >= idle.result.peak_host_rss_mib + 150
    assert busy.result.to_dict()["peak_host_rss_mib"] == round(busy.result.peak_host_rss_mib, 1)
