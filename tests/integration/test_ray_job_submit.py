"""`ray start --head` + `ray job submit` of jobs/annotate.py, as a user does it, on the built-in defaults
(dlib model + its shipped calibration). The head runs in its own process group and is torn down with it, so
other Ray instances on the machine are untouched."""

from __future__ import annotations

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


@pytest.fixture
def ray_head():
    gcs, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="froq-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                break
            assert proc.poll() is None, "ray start --head exited"
            time.sleep(2)
        else:
            pytest.fail("the Ray head's job server did not come up within 120 s")
        yield address, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


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
    submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
              "python", "jobs/annotate.py", "--input", str(inputs), "--output", str(out),
              "--set", "resources.ray_batch_size=4"]
    for _ in range(30):  # the job agent starts a little after the job server answers
        result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in result.stderr + result.stdout:
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    assert "summary: counts by status: corrupt=1, empty=1, not_an_image=1, ok=6" in result.stdout
    df = pd.read_parquet(out)
    assert len(df) == len(images) + 3 and (df["status"] == "ok").sum() == len(images)
    assert df.loc[df["status"] == "ok", "model_id"].str.startswith("dlib_resnet_v1@").all()
    assert df["embedding"].dropna().map(len).eq(128).all()
