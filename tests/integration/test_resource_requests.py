"""A resource request that no node of the job's own local Ray can grant is refused at once, naming the key, before
the output is opened (no run record left): in a fresh driver that would start Ray itself (the reported case:
``resources.num_cpus_per_actor=99`` used to wait for the whole no-progress timeout), and for annotate and
calibrate on the test cluster this process holds (its largest node: 2 CPUs, no GPU)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from froq_ray.cli import main
from tests.integration.jobfiles import env_with_repo_on_path, froq_command, lfw_sample

pytestmark = pytest.mark.integration


def one_face_folder(lfw_dev_dir: Path, folder: Path) -> Path:
    (image,) = lfw_sample(lfw_dev_dir, identities=1, per_identity=1)
    (folder / image.parent.name).mkdir(parents=True)
    (folder / image.parent.name / image.name).write_bytes(image.read_bytes())
    return folder


def test_a_fresh_driver_refuses_an_actor_larger_than_its_own_local_ray(lfw_dev_dir, tmp_path):
    inputs = one_face_folder(lfw_dev_dir, tmp_path / "in")
    env = {k: v for k, v in env_with_repo_on_path().items() if k != "RAY_ADDRESS"}
    command = froq_command(
        "annotate",
        *("--input", str(inputs), "--output", str(tmp_path / "out")),
        *("--set", "resources.num_cpus=2", "--set", "resources.num_cpus_per_actor=99"),
    )
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors == [
        "froq annotate: error: resources.num_cpus_per_actor=99 is more than the 2 CPU(s) of the largest local Ray node "
        "this job runs on: Ray would wait forever for a node that never comes (lower it, or join a cluster that "
        "has or can add such a node with resources.ray_address)"
    ]
    assert "No available node types" not in done.stderr  # Ray never waited for the request
    assert not (tmp_path / "out").exists()  # refused before the output was opened: no run record


@pytest.mark.parametrize(
    ("job", "setting", "message"),
    [
        (
            "annotate",
            "resources.num_cpus_per_actor=99",
            "resources.num_cpus_per_actor=99 is more than the 2 CPU(s)",
        ),
        (
            "annotate",
            "resources.num_gpus_per_actor=1",
            "resources.num_gpus_per_actor=1 is more than the 0 GPU(s)",
        ),
        (
            "calibrate",
            "resources.decode_num_cpus=2.5",
            "resources.decode_num_cpus=2.5 is more than the 2 CPU(s)",
        ),
    ],
)
def test_annotate_and_calibrate_on_the_local_cluster_refuse_before_opening_the_output(
    ray_cluster,  # noqa: ARG001 - the local Ray this process holds (2 CPUs, no GPU)
    lfw_dev_dir,
    mobilefacenet_pt,
    tmp_path,
    capsys,
    monkeypatch,
    job,
    setting,
    message,
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    inputs = one_face_folder(lfw_dev_dir, tmp_path / "in")
    out = tmp_path / "out"
    # annotate: the default model; calibrate: the recognition model it calibrates
    model = ["--set", "model.name=mobilefacenet", "--set", f"model.weights={mobilefacenet_pt}"]
    model = model if job == "calibrate" else []
    capsys.readouterr()
    assert main([job, "--input", str(inputs), "--output", str(out), *model, "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"froq {job}: error: {message} of the largest local Ray node this job runs on: "), (
        err
    )
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert os.environ.get("RAY_ADDRESS") is None
