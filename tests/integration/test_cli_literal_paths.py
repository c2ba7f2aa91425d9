"""The reported run, end to end on a real local Ray: ``froq annotate --input "in #2" --output "out #2" --mode
overwrite`` reads ``in #2`` and writes ``out #2``; an earlier run in ``out`` is untouched (issue 13 item 1).
The run's captured (not a terminal) output has no "progress bars disabled" warning and keeps froq_ray's own
progress lines (issue 13 item 14). (Ray core's ``core_worker.cc ... constructor arguments`` line is expected:
scoring actors are restartable, see ``froq_ray.engine.dataset.SCORING_ACTOR_MAX_RESTARTS``.)"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from froq_ray import status as st
from froq_ray.cli import main
from tests.integration.jobfiles import env_with_repo_on_path, froq_command, lfw_sample

pytestmark = pytest.mark.integration


def copy_images(images: list[Path], folder: Path) -> list[str]:
    paths = []
    for image in images:
        target = folder / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.read_bytes())
        paths.append(str(target))
    return sorted(paths)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_names_with_hash_are_used_as_typed_and_the_run_keeps_its_progress_lines(
    ray_cluster, lfw_dev_dir, tmp_path
):
    images = lfw_sample(lfw_dev_dir, identities=3, per_identity=2)
    earlier_inputs = copy_images(images[:4], tmp_path / "in")
    new_inputs = copy_images(images[4:], tmp_path / "in #2")
    small = ["--set", "resources.ray_batch_size=4", "--set", "resources.model_batch_size=4"]

    # the earlier run: `in` -> `out` (in this process, on the test cluster)
    assert main(["annotate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), *small]) == 0
    before = snapshot(tmp_path / "out")
    assert sorted(pd.read_parquet(tmp_path / "out")["path"]) == earlier_inputs

    # the reported command, typed with relative names in a fresh driver whose output is captured
    address = ray_cluster.get_runtime_context().gcs_address
    typed = ["--input", "in #2", "--output", "out #2", "--mode", "overwrite"]
    settings = [
        "--set",
        f"resources.ray_address={address}",
        *small,
        "--set",
        "output.progress_interval_s=0.001",
    ]
    run = subprocess.run(
        froq_command("annotate", *typed, *settings),
        cwd=tmp_path,
        env=env_with_repo_on_path(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]

    new = pd.read_parquet(tmp_path / "out #2")
    assert sorted(new["path"]) == new_inputs and (new["status"] == st.OK).all()
    assert snapshot(tmp_path / "out") == before, "the earlier run's output was changed"
    assert not (tmp_path / "out" / "_froq" / "manifest.json").read_text().count("in #2")

    assert "Progress bars disabled" not in output
    assert "froq_ray: progress: 2/2 rows (100.0%)" in run.stdout  # froq_ray's own progress line stays
