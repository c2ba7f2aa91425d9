"""``froq annotate`` with ``scoring.mode: student``: a distilled student artifact is the quality model
(real local Ray cluster; real LFW-dev faces with bad files mixed in)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from froq_ray import status as st
from froq_ray.distill.artifact import WEIGHTS_FILE, load_student_artifact, save_student_artifact
from froq_ray.distill.students import build_student
from froq_ray.imaging.folder import load_crops_strict
from froq_ray.storage.schema import read_metadata
from tests.integration.jobfiles import (
    BAD_FILES,
    SMALL_RESOURCES,
    folder_writer,
    lfw_sample,
    put_inputs,
    run_job,
    write_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture()
def student_dir(tmp_path):
    torch.manual_seed(0)
    network = build_student("tiny_cnn", 64, {"width": 8})
    network.set_target_scale(20.0, 3.0)
    out = tmp_path / "student"
    save_student_artifact(str(out), network, {"target_column": "quality", "teacher": {"model_id": "t@0"}})
    return out


def annotate_config(inputs, output, student) -> dict:
    return {
        "job": "annotate",
        "input": {"uri": str(inputs), "identity_from_folder": True},
        "scoring": {"mode": "student", "student_artifact": str(student)},
        "resources": {k: v for k, v in SMALL_RESOURCES.items() if k != "progress_interval_s"}
        | {"num_cpus": 2},
        "output": {"uri": str(output), "shard_size": 8, "progress_interval_s": 1},
    }


@pytest.mark.usefixtures("ray_cluster")
def test_annotate_with_a_student(lfw_dev_dir, student_dir, tmp_path):
    inputs = tmp_path / "in"
    images = lfw_sample(lfw_dev_dir, identities=6, per_identity=2)
    n_inputs = put_inputs(folder_writer(inputs), images)
    out = tmp_path / "out"
    assert run_job("annotate", write_config(tmp_path, "ann", annotate_config(inputs, out, student_dir))) == 0

    df = pq.read_table(out).to_pandas()
    assert len(df) == n_inputs
    assert "embedding" not in df.columns
    student = load_student_artifact(str(student_dir))
    assert set(df["model_id"]) == {student.student_id}
    assert sorted(df.loc[df.status != st.OK, "status"]) == sorted(BAD_FILES.values())
    ok = df[df.status == st.OK].sort_values("path")
    assert len(ok) == len(images)

    # the job's quality is the student's own output on the same crops, in teacher units
    crops = load_crops_strict(list(ok["path"]))
    with torch.inference_mode():
        expected = student.network(student.input_transform()(torch.from_numpy(crops))).numpy()
    np.testing.assert_allclose(ok["quality"].to_numpy(), expected, rtol=1e-5, atol=1e-5)

    meta = read_metadata(pq.read_schema(min(out.glob("part-*.parquet"))))
    assert meta["froq_ray.model_id"] == student.student_id


def test_a_corrupt_student_fails_before_ray_work(student_dir, lfw_dev_dir, tmp_path, capsys):
    weights = student_dir / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
    inputs = lfw_dev_dir / "images" / "Aaron_Patterson"
    cfg = annotate_config(inputs, tmp_path / "out", student_dir)
    assert run_job("annotate", write_config(tmp_path, "ann", cfg)) == 2
    err = capsys.readouterr().err
    assert "froq annotate: error:" in err and "sha256" in err
    assert not (tmp_path / "out").exists()
