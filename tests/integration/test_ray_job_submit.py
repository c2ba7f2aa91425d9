"""`ray start --head` + `ray job submit` of jobs/annotate.py, as a user does it, on the built-in defaults
(dlib model + its shipped calibration). The head runs in its own process group and is torn down with it, so
other Ray instances on the machine are untouched."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.jobfiles import bad_file_bytes, lfw_sample

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(env: dict[str, str]) -> tuple[subprocess.Popen | None, str, str, str]:
    """``ray start --head`` on fresh ports until its job server answers: (process, address, temp dir, log tail);
    the process is None when ray start exited (e.g. a port taken meanwhile by another Ray on a busy box)."""
    gcs, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(
        prefix="froq-ray-", dir="/tmp"
    )  # short: Ray's socket paths must fit 107 bytes
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        f"--port={gcs}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    with open(Path(temp_dir) / "ray-start.log", "w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [str(BIN / "ray"), "job", "list", "--address", address],
                check=False,
                env=env,
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0:
                return proc, address, temp_dir, ""
            if proc.poll() is not None:
                log.seek(0)
                shutil.rmtree(temp_dir, ignore_errors=True)
                return None, address, temp_dir, f"exit {proc.returncode}:\n{log.read()[-3000:]}"
            time.sleep(2)
    stop_head(proc, temp_dir)
    pytest.fail("the Ray head's job server did not come up within 120 s")


def stop_head(proc: subprocess.Popen, temp_dir: str) -> None:
    with contextlib.suppress(ProcessLookupError):  # the head's whole process group, and only it
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT"] = (
        "180"  # dashboard modules start slowly on a busy box
    )
    failures = []
    for _ in range(2):  # a second try on fresh ports; both failures are reported
        proc, address, temp_dir, failure = start_head(env)
        if proc is not None:
            break
        failures.append(failure)
    else:
        pytest.fail("ray start --head failed twice:\n" + "\n---\n".join(failures))
    try:
        yield address, env
    finally:
        stop_head(proc, temp_dir)


@pytest.mark.timeout(1200)  # ray start --head (up to two tries of 120 s) and the submitted job
def test_ray_job_submit_annotate_on_defaults(ray_head, tmp_path, lfw_dev_dir):
    address, env = ray_head
    inputs = tmp_path / "faces"
    images = lfw_sample(lfw_dev_dir, identities=3, per_identity=2)
    for path in images:
        (inputs / path.parent.name).mkdir(parents=True, exist_ok=True)
        (inputs / path.parent.name / path.name).write_bytes(path.read_bytes())
    for name, data in bad_file_bytes().items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_bytes(data)
    out = tmp_path / "annotations"
    submit = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "jobs/annotate.py",
        "--input",
        str(inputs),
        "--output",
        str(out),
        "--set",
        "resources.ray_batch_size=4",
    ]
    transient = ("No available agent to submit job", "Server disconnected", "Connection aborted")
    for _ in range(30):  # the job agent comes up a little after the job server answers (slowly on a busy box)
        result = subprocess.run(submit, check=False, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode == 0 or not any(t in result.stderr + result.stdout for t in transient):
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    assert "summary: counts by status: corrupt=1, empty=1, not_an_image=1, ok=6" in result.stdout
    df = pd.read_parquet(out)
    assert len(df) == len(images) + 3 and (df["status"] == "ok").sum() == len(images)
    assert df.loc[df["status"] == "ok", "model_id"].str.startswith("dlib_resnet_v1@").all()
    assert df["embedding"].dropna().map(len).eq(128).all()
