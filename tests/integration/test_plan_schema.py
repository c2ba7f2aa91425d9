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


def plan_output(job: str, config: Path, *extra: str) -> dict[str, str]:
    """``froq plan``'s lines by their label (the text before the first ``": "``); ``extra``: more arguments."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["plan", "--job", job, "--config", str(config), *extra]) == 0
    return dict(line.split(": ", 1) for line in buffer.getvalue().splitlines() if ": " in line)


def run_error(capsys, job: str, config: Path, *extra: str) -> str:
    """The one-line error of a refused run (exit code 2)."""
    capsys.readouterr()
    assert main([job, "--config", str(config), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"froq {job}: error: "), err
    return err.removeprefix(f"froq {job}: error: ")


def files_of(folder: Path) -> dict[str, float]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()
    }


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
        # a fresh output: the inputs are counted by the run's Ray listing tasks (nothing written), exact shards
        assert plan["inputs"].startswith(f"4 images from {inputs} (identities from the parent folder names")
        assert plan["inputs"].endswith("; listed by Ray tasks that return only counts; nothing written)")
        assert plan["output"] == f"{out} (mode resume): new run: 2 shard(s) to write"
        assert plan["shards"].startswith("2 of up to 3 rows")
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


@pytest.mark.usefixtures("runs")
@pytest.mark.parametrize("mode", MODES)
def test_plan_of_a_finished_run_reads_its_stored_listing_and_starts_no_ray(
    mode, work, inputs, mobilefacenet_pt, student_dir, monkeypatch
):
    from froq_ray.engine import runner

    def refuse(*_args, **_kwargs):
        raise AssertionError("plan started Ray (or listed the input) although the output holds its listing")

    monkeypatch.setattr(runner, "ensure_ray", refuse)
    job, config, out = job_config(work, inputs, mode, mobilefacenet_pt, student_dir)
    before = files_of(out)
    plan = plan_output(job, config)
    assert plan["inputs"].startswith(f"4 images from {inputs} ")
    assert plan["inputs"].endswith(
        "from the stored listing of the run being resumed (_froq/inputs/plan.json in the output; not listed again))"
    )
    assert plan["output"] == f"{out} (mode resume): nothing to do: all 2 shard(s) done"
    assert files_of(out) == before  # nothing written, nothing deleted


@pytest.mark.usefixtures("runs")
def test_plan_refuses_with_the_runs_own_reason_and_deletes_nothing(
    work, inputs, mobilefacenet_pt, student_dir, capsys
):
    job, config, out = job_config(work, inputs, "pseudo_label", mobilefacenet_pt, student_dir)
    before = files_of(out)
    changed = ("--set", "output.shard_size=2")
    plan = plan_output(job, config, *changed)
    reason = run_error(capsys, job, config, *changed)
    assert reason.startswith(f"cannot resume into {out}: the config differs in 1 key(s) (listed below)")
    assert plan["output"] == f"{out} (mode resume): refused: {reason.splitlines()[0]}"
    assert "  output.shard_size: 3 -> 2" in reason.splitlines()  # the detail lines follow in both
    # a refused run lists nothing, but the plan still counts the input (Ray listing tasks, counts only)
    assert plan["inputs"].startswith("4 images ") and plan["shards"].startswith("2 of up to 2 rows")

    exists = ("--set", "output.mode=error_if_exists")
    plan = plan_output(job, config, *exists)
    reason = run_error(capsys, job, config, *exists)
    assert reason.startswith(f"output {out} already holds part-00000.parquet, ")
    assert reason.endswith(
        "and output.mode is error_if_exists: choose another output, or set output.mode to resume or overwrite\n"
    )
    assert plan["output"] == f"{out} (mode error_if_exists): refused: {reason.strip()}"

    # what --force would do: list again (the forced run does), keep no shard of the other layout
    plan = plan_output(job, config, *changed, "--force")
    assert plan["output"] == (
        f"{out} (mode resume): resume: 0 of 2 shard(s) done, 2 to write (--force: resuming although the run "
        "record differs)"
    )
    overwrite = plan_output(job, config, "--set", "output.mode=overwrite")
    assert overwrite["output"] == (
        f"{out} (mode overwrite): new run: 2 shard(s) to write (output.mode overwrite: what an earlier run "
        "wrote there is deleted first)"
    )
    assert files_of(out) == before  # neither the plans nor the refused runs changed the output
