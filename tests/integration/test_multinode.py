"""Scale-out runs on a real local multi-node Ray cluster (issue 14): a head with 0 CPUs and two 1-CPU worker
nodes (``ray.cluster_utils.Cluster``, its own temp dir, always shut down). Each job runs in a subprocess driver
that joins the cluster (``resources.ray_address``), scoring a few hundred real LFW-dev crops (copied under
distinct names) with a small student network (MobileFaceNet-sized, 224 px) in shards of :data:`SHARD_SIZE`
rows.

1. a plain run: every input exactly once;
2. the worker node that hosts the scoring actor is removed once >= 1 shard (not all) is complete, and a
   replacement node is added: the run completes, every row exactly once, no duplicate file;
3. the worker node that runs the read/decode and write tasks is removed with no replacement (the remaining node
   holds the scoring actor, so no block can be decoded): the job fails within the no-progress timeout with one
   clear line (exit 2); a node is added and the re-run completes every row once without rewriting the shards
   the first run completed.

Node removal is triggered by a count of completion markers, never by a sleep. Resources: the scoring actor and
every read/decode task need a whole CPU (one per node), so the stages are placed on different nodes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem

from froq_ray import status as st
from froq_ray.distill.artifact import save_student_artifact
from froq_ray.distill.students import build_student
from froq_ray.storage.shards import read_markers
from tests.integration.jobfiles import env_with_repo_on_path, froq_command, lfw_sample, write_config

pytestmark = pytest.mark.integration

SHARD_SIZE = 8
COPIES = 8  # each real crop is written under this many distinct names
NO_PROGRESS_TIMEOUT_S = 20.0
JOB_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def cluster():
    """A head node with 0 CPUs (nothing but the driver runs there) plus two 1-CPU worker nodes."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="froq-mn-")  # short: Ray's socket paths live under it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": temp_dir})
    try:
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def with_two_workers(cluster) -> None:
    """Top the cluster up to two alive worker nodes (earlier tests remove nodes)."""
    while len(cluster.worker_nodes) < 2:
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("multinode")


@pytest.fixture(scope="module")
def inputs(work, lfw_dev_dir) -> list[str]:
    """A folder of ``COPIES`` x 32 real crops, each copy under its own name (``<Identity>/<k>_<file>``)."""
    folder = work / "in"
    paths = []
    for image in lfw_sample(lfw_dev_dir, identities=16, per_identity=2):
        data = image.read_bytes()
        (folder / image.parent.name).mkdir(parents=True, exist_ok=True)
        for k in range(COPIES):
            target = folder / image.parent.name / f"{k}_{image.name}"
            target.write_bytes(data)
            paths.append(str(target))
    return sorted(paths)


@pytest.fixture(scope="module")
def student(work) -> Path:
    """A MobileFaceNet-sized student at 224 px (small, but much slower than decoding and writing): scoring is
    the bottleneck, so when a node is removed after the first shard, the scoring actor still holds queued
    blocks (tasks in flight) and most shards are not yet scored. (At 112 px, scoring sometimes finished every
    shard before the removal; the pool then released its CPU and the run completed instead of stalling.)"""
    torch.manual_seed(0)
    network = build_student("mobilefacenet_student", 224)
    save_student_artifact(
        str(work / "student"), network, {"target_column": "quality", "teacher": {"model_id": "t@0"}}
    )
    return work / "student"


def job_config(work: Path, name: str, inputs: list[str], student: Path, address: str) -> tuple[Path, Path]:
    """(config file, output folder) of an annotate run of ``work/in`` into ``work/<name>``."""
    out = work / name
    cfg = {
        "job": "annotate",
        "input": {"uri": str(Path(inputs[0]).parents[1]), "identity_from_folder": True},
        "scoring": {"mode": "student", "student_artifact": str(student)},
        "resources": {
            "ray_address": address,
            "actors": 1,
            "num_cpus_per_actor": 1,
            "decode_num_cpus": 1,
            "model_batch_size": SHARD_SIZE,
            "no_progress_timeout_s": NO_PROGRESS_TIMEOUT_S,
        },
        "output": {"uri": str(out), "shard_size": SHARD_SIZE, "progress_interval_s": 1},
    }
    return write_config(work, name, cfg), out


def start_job(config: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as sink:
        return subprocess.Popen(
            froq_command("annotate", "--config", str(config)),
            env=env_with_repo_on_path(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the job did not end within {JOB_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
    return code, log.read_text()


def markers(out: Path) -> dict[int, dict]:
    try:
        return read_markers(LocalFileSystem(), str(out))
    except FileNotFoundError:
        return {}


def wait_for_markers(proc: subprocess.Popen, out: Path, count: int, log: Path) -> int:
    """Poll the output until ``count`` shards are complete (a row count, not a time); returns how many are."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        done = len(markers(out))
        if done >= count:
            return done
        time.sleep(0.02)
    pytest.fail(
        f"the job ended (or stalled) before {count} shard(s) were complete:\n{log.read_text()[-4000:]}"
    )


def descendants(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(
                int(stat.parent.name)
            )
        except (OSError, IndexError, ValueError):
            continue
    out, stack = [], list(children.get(pid, []))
    while stack:
        out.append(stack.pop())
        stack.extend(children.get(out[-1], []))
    return out


def node_running(cluster, title: str):
    """The worker node whose raylet has a descendant process whose command line contains ``title``."""
    from ray._private import ray_constants

    for node in cluster.worker_nodes:
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        for pid in descendants(raylet):
            try:
                cmdline = (
                    Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            if title in cmdline:
                return node
    return None


def wait_for_actor_node(cluster, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        node = node_running(cluster, "MapWorker")
        if node is not None:
            return node
        time.sleep(0.02)
    pytest.fail(f"no scoring actor was found on a worker node:\n{log.read_text()[-4000:]}")


def part_digests(out: Path) -> dict[str, tuple[int, str]]:
    """Parquet part name -> (mtime ns, sha256) of every part in ``out``."""
    return {
        p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(out.glob("part-*.parquet"))
    }


def shard_count(inputs: list[str]) -> int:
    return -(-len(inputs) // SHARD_SIZE)


@dataclasses.dataclass(frozen=True)
class MidRun:
    """A job started by :func:`run_past_first_shard`: its driver, config, output and log, the worker node of
    its scoring actor, how many shards were complete when it was seen mid-run, and how many it has in all."""

    proc: subprocess.Popen
    config: Path
    out: Path
    log: Path
    actor_node: object
    done: int
    shards: int

    def remove_node(self, cluster, node) -> float:
        """Remove ``node`` at once (not gracefully), check that the run was mid-way; returns the monotonic
        time of the removal."""
        cluster.remove_node(node, allow_graceful=False)
        removed_at = time.monotonic()
        assert 1 <= self.done <= len(markers(self.out)) < self.shards, "the node was not removed mid-run"
        return removed_at


@contextlib.contextmanager
def run_past_first_shard(
    cluster, work: Path, name: str, inputs: list[str], student: Path
) -> Iterator[MidRun]:
    """Start an annotate run into ``work/<name>`` on two worker nodes; yield once its scoring actor's node is
    known and >= 1 shard is complete (a marker count, not a time). The driver is killed at exit if it still
    runs."""
    with_two_workers(cluster)
    config, out = job_config(work, name, inputs, student, cluster.address)
    log = work / f"{name}.log"
    proc = start_job(config, log)
    try:
        actor_node = wait_for_actor_node(cluster, proc, log)
        done = wait_for_markers(proc, out, 1, log)
        yield MidRun(proc, config, out, log, actor_node, done, shard_count(inputs))
    finally:
        if proc.poll() is None:
            proc.kill()


def assert_every_input_once(out: Path, inputs: list[str]) -> pd.DataFrame:
    """The parts hold every input exactly once; one part per shard, each with its marker and vice versa."""
    n_shards = shard_count(inputs)
    parts = sorted(out.glob("part-*.parquet"))
    done = markers(out)
    assert len(parts) == n_shards
    assert sorted(done) == list(range(n_shards))
    assert sorted(m["file"] for m in done.values()) == [p.name for p in parts], (
        "a part without marker or vice versa"
    )
    frames = [pd.read_parquet(p) for p in parts]
    for part, frame in zip(parts, frames, strict=True):
        marker = next(m for m in done.values() if m["file"] == part.name)
        assert len(frame) == marker["rows"] == marker["stop"] - marker["start"], part.name
    df = pd.concat(frames, ignore_index=True)
    assert not df["path"].duplicated().any(), "an input was written twice"
    assert sorted(df["path"]) == inputs
    assert (df["status"] == st.OK).all()
    assert (out / "_froq" / "manifest.json").is_file()
    return df


@pytest.mark.timeout(600)
def test_a_run_on_two_worker_nodes_writes_every_input_once(cluster, work, inputs, student):
    with_two_workers(cluster)
    config, out = job_config(work, "plain", inputs, student, cluster.address)
    log = work / "plain.log"
    code, text = finish(start_job(config, log), log)
    assert code == 0, text[-4000:]
    assert_every_input_once(out, inputs)


@pytest.mark.timeout(600)
def test_the_scoring_node_removed_and_replaced_mid_run(cluster, work, inputs, student):
    with run_past_first_shard(cluster, work, "replaced", inputs, student) as run:
        run.remove_node(cluster, run.actor_node)
        cluster.add_node(num_cpus=1)
        code, text = finish(run.proc, run.log)
    assert code == 0, text[-4000:]
    assert len(markers(run.out)) == run.shards
    assert_every_input_once(run.out, inputs)


@pytest.mark.timeout(600)
def test_a_node_lost_without_replacement_fails_in_time_and_a_rerun_completes(cluster, work, inputs, student):
    with run_past_first_shard(cluster, work, "lost", inputs, student) as run:
        (decode_node,) = [n for n in cluster.worker_nodes if n is not run.actor_node]
        removed_at = run.remove_node(cluster, decode_node)
        code, text = finish(run.proc, run.log)
        elapsed = time.monotonic() - removed_at
    assert code == 2, text[-4000:]
    errors = [line for line in text.splitlines() if line.startswith("froq annotate: error:")]
    assert len(errors) == 1 and "resources.no_progress_timeout_s" in errors[0], text[-4000:]
    assert "Traceback" not in text
    assert elapsed < NO_PROGRESS_TIMEOUT_S + 60, f"failed {elapsed:.0f} s after the node was removed"

    out, n_shards = run.out, run.shards
    kept = {marker["file"] for marker in markers(out).values()}
    assert 0 < len(kept) < n_shards
    assert f"; {len(kept)} of {n_shards} pending shard(s) were written and are kept" in errors[0]
    before = {name: value for name, value in part_digests(out).items() if name in kept}

    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    log = work / "lost-rerun.log"
    code, text = finish(start_job(run.config, log), log)
    assert code == 0, text[-4000:]
    assert f"{len(kept)} already complete" in text
    assert_every_input_once(out, inputs)
    after = part_digests(out)
    assert {name: after[name] for name in kept} == before, "a shard completed by the first run was rewritten"
