"""Problems a user must fix fail before Ray starts, with one message that names the problem (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from froq_ray.cli import main

pytestmark = pytest.mark.usefixtures("no_ray_started")


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_missing_input(capsys, tmp_path):
    code, err = run(capsys, "annotate", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    assert code == 2 and str(tmp_path / "nope") in err


def test_bad_config_key_is_named(capsys, tmp_path, one_image_dir):
    code, err = run(
        capsys,
        "annotate",
        "--input",
        str(one_image_dir),
        "--output",
        str(tmp_path / "o"),
        "--set",
        "output.mod=resume",
    )
    assert code == 2 and "output.mod" in err and "mode" in err


def test_bad_config_file_key_is_named(capsys, tmp_path, one_image_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"job: annotate\ninput: {{uri: {one_image_dir}}}\noutput: {{uri: {tmp_path}/o}}\n"
        "resources: {actors: 0}\n"
    )
    code, err = run(capsys, "annotate", "--config", str(cfg))
    assert code == 2 and "resources.actors" in err and str(cfg) in err


def test_missing_model_file(capsys, tmp_path, one_image_dir):
    code, err = run(
        capsys,
        "annotate",
        "--input",
        str(one_image_dir),
        "--output",
        str(tmp_path / "o"),
        "--set",
        "model.name=mobilefacenet",
        "--set",
        f"model.weights={tmp_path}/missing.pt",
    )
    assert code == 2 and "missing.pt" in err


def test_missing_calibration_artifact(capsys, tmp_path, one_image_dir, mobilefacenet_pt):
    code, err = run(
        capsys,
        "annotate",
        "--input",
        str(one_image_dir),
        "--output",
        str(tmp_path / "o"),
        "--set",
        "model.name=mobilefacenet",
        "--set",
        f"model.weights={mobilefacenet_pt}",
    )
    assert code == 2 and "no built-in calibration" in err and "mobilefacenet" in err


def test_unwritable_output(capsys, tmp_path, one_image_dir, mobilefacenet_pt):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = run(
        capsys,
        "annotate",
        "--input",
        str(one_image_dir),
        "--output",
        str(blocker / "out"),
        "--set",
        "scoring.mode=pseudo_label",
        "--set",
        "model.name=mobilefacenet",
        "--set",
        f"model.weights={mobilefacenet_pt}",
    )
    assert code == 2 and str(blocker / "out") in err


def test_plan_of_a_resumable_output_counts_from_its_stored_listing_without_ray(
    capsys, tmp_path, one_image_dir, mobilefacenet_pt
):
    """An output whose run record and finished input listing match the config: plan reads the stored counts
    (no Ray, no listing: ``no_ray_started``), says the run resumes, and writes nothing."""
    import pandas as pd

    from froq_ray.config import config_digest, config_from_dict, digest_payload
    from froq_ray.engine.inputs import inputs_from_table
    from froq_ray.engine.runner import load_job_model
    from froq_ray.pipeline.annotate import digest_extra
    from froq_ray.storage.run_state import prepare_output

    out = tmp_path / "o"
    args = ["--input", str(one_image_dir), "--output", str(out)]
    settings = ["scoring.mode=pseudo_label", "model.name=mobilefacenet", f"model.weights={mobilefacenet_pt}"]
    cfg = config_from_dict(
        {"job": "annotate", "input": {"uri": str(one_image_dir)}, "output": {"uri": str(out)}}, settings
    )
    extra = digest_extra(load_job_model(cfg), None)  # what the run folds in (no calibration in this mode)
    state = prepare_output(
        str(out), {}, "resume", config_digest(cfg, extra), None, config=digest_payload(cfg, extra)
    )
    image = next(one_image_dir.rglob("*.jpg"))
    inputs_from_table(
        pd.DataFrame({"path": [str(image)], "identity": [None]}), state.fs, state.path, reuse=False
    )
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))

    code = main(["plan", *args, *(x for s in settings for x in ("--set", s))])
    out_text = capsys.readouterr().out
    assert code == 0
    assert f"inputs: 1 images from {one_image_dir} (no identities; from the stored listing" in out_text
    assert f"output: {out} (mode resume): resume: 0 of 1 shard(s) done, 1 to write" in out_text
    assert "shards: 1 of up to 2,048 rows" in out_text
    assert "pl_occlusion: float" in out_text
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_every_user_facing_error_shares_one_base(capsys, monkeypatch):
    """The CLI catches one base class; each module's user-facing error derives from it (no hand-kept list)."""
    from froq_ray.config import ConfigError
    from froq_ray.distill.artifact import StudentArtifactError
    from froq_ray.errors import UserError
    from froq_ray.evaluation.pairs import PairsFormatError
    from froq_ray.models.base import ModelLoadError
    from froq_ray.pipeline.calibrate import CalibrationInputError
    from froq_ray.pipeline.distill_inputs import DistillInputError
    from froq_ray.pipeline.evaluate import EvaluationInputError
    from froq_ray.pipeline.filter import FilterInputError
    from froq_ray.quality.artifact import ArtifactError, ArtifactMismatchError
    from froq_ray.storage.listing import InputListingError
    from froq_ray.storage.run_state import OutputStateError

    for cls in (
        ConfigError,
        StudentArtifactError,
        PairsFormatError,
        ModelLoadError,
        CalibrationInputError,
        DistillInputError,
        EvaluationInputError,
        FilterInputError,
        ArtifactError,
        ArtifactMismatchError,
        InputListingError,
        OutputStateError,
    ):
        assert issubclass(cls, UserError), cls

    class NewError(UserError):
        pass

    from froq_ray import cli

    def fail(_args):
        raise NewError("something to fix")

    monkeypatch.setattr(cli, "_run", fail)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "froq models: error: something to fix"


@pytest.mark.parametrize(
    "model_name, artifact_for", [("mobilefacenet", "dlib_resnet_v1"), ("dlib_resnet_v1", "mobilefacenet")]
)
def test_a_calibration_made_for_another_model_is_refused(
    capsys, tmp_path, one_image_dir, mobilefacenet_pt, model_name, artifact_for
):
    import json

    from froq_ray.pipeline.artifacts import builtin_artifact_path

    repo = Path(__file__).resolve().parents[2]
    artifacts = {
        "dlib_resnet_v1": builtin_artifact_path("dlib_resnet_v1"),
        "mobilefacenet": repo / "docs" / "results" / "mobilefacenet-lfw-folds123-sample300.calibration.json",
    }
    artifact = artifacts[artifact_for]
    assert json.loads(artifact.read_text())["model"]["name"] == artifact_for
    model = ["--set", f"model.name={model_name}"]
    if model_name == "mobilefacenet":
        model += ["--set", f"model.weights={mobilefacenet_pt}"]
    code, err = run(
        capsys,
        "annotate",
        "--input",
        str(one_image_dir),
        "--output",
        str(tmp_path / "o"),
        *model,
        "--set",
        f"calibration.artifact={artifact}",
    )
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert f"made for model {artifact_for!r} and cannot be applied to model {model_name!r}" in message
    assert json.loads(artifact.read_text())["calibration_id"] in message
    assert not (tmp_path / "o").exists()


def test_one_problem_is_one_line_and_a_repeated_yaml_key_is_refused(capsys, tmp_path, one_image_dir):
    code, err = run(
        capsys,
        "plan",
        "--input",
        str(one_image_dir),
        "--output",
        str(tmp_path / "o"),
        "--set",
        "input.limit=abc",
    )
    assert code == 2 and err.strip().splitlines()[-1] == (
        "froq plan: error: input.limit: must be an integer (got 'abc') (command line)"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"job: annotate\ninput: {{uri: {one_image_dir}, uri: {tmp_path}}}\noutput: {{uri: {tmp_path}/o}}\n"
    )
    code, err = run(capsys, "annotate", "--config", str(cfg))
    line = err.strip().splitlines()[-1]
    assert code == 2 and "key 'uri' appears twice in one mapping" in line and str(cfg) in line


def test_identity_column_on_a_folder_is_refused_not_ignored(capsys, tmp_path, one_image_dir):
    code, err = run(
        capsys,
        "annotate",
        "--input",
        str(one_image_dir),
        "--output",
        str(tmp_path / "o"),
        "--set",
        "input.identity_column=identity",
    )
    line = err.strip().splitlines()[-1]
    assert code == 2 and "input.identity_column='identity' names a manifest column" in line
    assert "identity_from_folder" in line


def test_ctrl_c_is_one_line_saying_how_to_resume(capsys, monkeypatch):
    from froq_ray import cli

    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "froq models: interrupted; completed shards are kept: run the same command again to resume"
    )
