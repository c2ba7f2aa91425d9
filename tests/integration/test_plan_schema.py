"""``froq plan`` prints exactly the schema a run writes, for every scoring mode: for each of froq, pseudo_label,
student and calibrate, plan's ``output schema:`` line is compared field by field (name, type, nullability,
order) with the schema of every Parquet part the real job then writes (real local Ray cluster; 4 real LFW-dev
faces; cheap perturbations; a tiny student)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from froq_ray.cli import main
from froq_ray.distill.artifact import save_student_artifact
from froq_ray.distill.students import build_student
from froq_ray.storage.manifest import read_manifest
from froq_ray.storage.schema import read_metadata
from tests.integration.jobfiles import FAST_PERTURBATIONS, SMALL_RESOURCES, lfw_sample, run_job, write_config

pytestmark = pytest.mark.integration

MODES = ["froq", "pseudo_label", "student", "calibrate"]
SCORE_KINDS = {
    "froq": "froq_quality",
    "pseudo_label": "pseudo_label",
    "student": "student_prediction",
    "calibrate": "calibration_pseudo_label",
}
FIELD = re.compile(r"^(?P<name>\w+): (?P<type>.+?)(?P<not_null> not null)?$")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plan_schema")


@pytest.fixture(scope="module")
def inputs(work, lfw_dev_dir) -> Path:
    folder = work / "in"
    for image in lfw_sample(lfw_dev_dir, identities=2, per_identity=2):
        (folder / image.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / image.parent.name / image.name).write_bytes(image.read_bytes())
    return folder


@pytest.fixture(scope="module")
def student_dir(work) -> Path:
    torch.manual_seed(0)
    network = build_student("tiny_cnn", 64, {"width": 8})
    save_student_artifact(
        str(work / "student"), network, {"target_column": "quality", "teacher": {"model_id": "t@0"}}
    )
    return work / "student"


def job_config(
    work: Path, inputs: Path, mode: str, mobilefacenet_pt: Path, student: Path
) -> tuple[str, Path, Path]:
    """(command, config file, output folder) of a tiny run of ``mode``."""
    out = work / f"out-{mode}"
    cfg = {
        "job": "calibrate" if mode == "calibrate" else "annotate",
        "input": {"uri": str(inputs), "identity_from_folder": True},
        "model": {"name": "mobilefacenet", "weights": str(mobilefacenet_pt)},
        "scoring": {"perturbation": FAST_PERTURBATIONS},
        "resources": {k: v for k, v in SMALL_RESOURCES.items() if k != "progress_interval_s"}
        | {"num_cpus": 2},
        "output": {"uri": str(out), "shard_size": 3, "progress_interval_s": 1},
    }
    if mode in ("pseudo_label", "student"):
        cfg["scoring"]["mode"] = mode
    if mode == "student":
        cfg["scoring"] = {"mode": "student", "student_artifact": str(student)}
        del cfg["model"]
    if mode == "froq":  # the artifact the calibrate run wrote
        cfg["calibration"] = {"artifact": str(work / "out-calibrate" / "_froq" / "calibration.json")}
    return cfg["job"], write_config(work, mode, cfg), out


def plan_output(job: str, config: Path) -> dict[str, str]:
    """``froq plan``'s lines by their label (the text before the first ``": "``)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["plan", "--job", job, "--config", str(config)]) == 0
    return dict(line.split(": ", 1) for line in buffer.getvalue().splitlines() if ": " in line)


def planned_fields(text: str) -> list[tuple[str, str, bool]]:
    """(name, type as pyarrow spells it, nullable) per field of plan's ``output schema`` text."""
    out = []
    for item in text.split(", "):
        m = FIELD.match(item)
        assert m, f"unparsable schema field {item!r}"
        out.append((m["name"], m["type"], m["not_null"] is None))
    return out


@pytest.fixture(scope="module")
def runs(ray_cluster, work, inputs, mobilefacenet_pt, student_dir):  # noqa: ARG001 - requested for its side effect: the Ray cluster
    """Per mode: plan's output, then the real job's output folder (calibrate first: froq reads its artifact)."""
    done = {}
    for mode in ["calibrate", "froq", "pseudo_label", "student"]:
        job, config, out = job_config(work, inputs, mode, mobilefacenet_pt, student_dir)
        plan = plan_output(job, config)
        assert not out.exists() or not any(out.iterdir()), "plan wrote into the output folder"
        assert run_job(job, config) == 0
        done[mode] = (plan, out)
    return done


@pytest.mark.parametrize("mode", MODES)
def test_plan_prints_the_schema_the_run_writes(runs, mode):
    plan, out = runs[mode]
    parts = sorted(out.glob("*.parquet"))
    assert len(parts) == 2  # 4 images, shards of 3
    planned = planned_fields(plan["output schema"])
    for part in parts:
        written = pq.read_schema(part)
        assert [(f.name, str(f.type), f.nullable) for f in written] == planned, part.name
        assert read_metadata(written)["froq_ray.score_kind"] == SCORE_KINDS[mode]
    assert plan["output quality"].startswith(SCORE_KINDS[mode] + " ")

    manifest = read_manifest(str(out))["results"]
    names = [name for name, _, _ in planned]
    if mode == "calibrate":
        n_layers = len(manifest["calibration"]["layer_norms_columns"])
        assert planned[-1] == ("layer_norms", f"fixed_size_list<element: float>[{n_layers}]", True)
    else:
        assert manifest["scoring"]["columns"] == names
        assert manifest["scoring"]["score_kind"] == SCORE_KINDS[mode]
    # the modes differ where they should: embedding only in froq, pseudo-label columns only without a calibration
    assert ("embedding" in names) == (mode == "froq")
    assert ("pseudo_label" in names) == (mode in ("pseudo_label", "calibrate"))
