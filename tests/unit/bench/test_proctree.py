"""CPU seconds of a process tree (the throughput benchmark's CPU accounting of a Ray phase)."""

from __future__ import annotations

import os
import subprocess
import sys

from froq_ray.bench.proctree import TICKS, tree_cpu_seconds
from froq_ray.bench.ray_phases import CpuSeconds

BURN = "import time\nwhile time.process_time() < 0.4: pass\nprint('done', flush=True)\ninput()\n"


def test_a_child_process_cpu_time_is_counted_with_its_command_line():
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"  # it has used 0.4 CPU s
        tree = tree_cpu_seconds(os.getpid())
        command, seconds = tree[child.pid]
        assert "process_time" in command
        assert 0.4 - 2 / TICKS <= seconds < 5.0  # /proc counts whole clock ticks
        assert os.getpid() in tree
    finally:
        child.communicate("\n")
    # once reaped, its time is this process's children time: still in the tree's total
    assert child.pid not in tree_cpu_seconds(os.getpid())


def test_phase_cpu_seconds_are_split_by_process_role():
    me = os.getpid()
    before = {me: ("python bench", 10.0), 2: ("ray::MapWorker(MapBatches(ScoringStage))", 1.0)}
    after = {
        me: ("python bench", 11.5),
        2: ("ray::MapWorker(MapBatches(ScoringStage))", 21.0),
        3: ("ray::_StatsActor", 2.0),  # started during the phase: all of its time counts
        4: ("raylet", 0.5),
    }
    cpu = CpuSeconds.between(before, after, wall=20.0)
    assert (cpu.scoring_actors, cpu.driver, cpu.other) == (20.0, 1.5, 2.5)
    assert cpu.available == 20.0 * (os.cpu_count() or 1)
    assert cpu.to_dict()["cpu_s_unused"] == round(cpu.available - 24.0, 2)
