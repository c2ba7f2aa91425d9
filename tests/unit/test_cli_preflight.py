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


def test_plan_prints_without_starting_ray(capsys, tmp_path, one_image_dir, mobilefacenet_pt):
    code = main(
        [
            "plan",
            "--input",
            str(one_image_dir),
            "--output",
            str(tmp_path / "o"),
            "--set",
            "scoring.mode=pseudo_label",
            "--set",
            "model.name=mobilefacenet",
            "--set",
            f"model.weights={mobilefacenet_pt}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "inputs: 1 images" in out and "shards: about 1 of up to 2,048 rows" in out
    assert "0 completion marker(s) in the output" in out
    assert "pl_occlusion: float" in out
    assert not (tmp_path / "o" / "_froq" / "run.json").exists()


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
