"""Problems a user must fix fail before Ray starts, within seconds, with exit code 2 and one line on stderr that
names the problem: the bad key, path, URI and endpoint (never a credential).

Each failing command is one row of ``FAILURES``: the command line and what its one line must say. ``$tmp`` (the
test's tmp_path), ``$images`` (a one-image input folder), ``$pt`` (the MobileFaceNet weights) and ``$endpoint``
(an S3 endpoint that refuses connections, with test credentials in the environment) stand for values known only
when the test runs; a row's fixtures are requested only when it names them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pytest

from froq_ray.cli import main
from froq_ray.storage.fs import StorageUnreachableError, check_reachable, endpoint_of

SECRET = "froq-test-secret-7f3a"
FAST_S = 15.0  # an unreachable endpoint used to take 19-22 s of retries; the check makes one attempt

pytestmark = pytest.mark.usefixtures("no_ray_started")


@pytest.fixture
def closed_endpoint(monkeypatch) -> Iterator[str]:
    """An endpoint URL on a local port that is bound but not listening: every connection is refused."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAFROQTEST",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent/froq-test-aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/froq-test-aws-credentials",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def one_line_failure(capsys, *args: str) -> str:
    """Run ``froq *args``; assert exit code 2, fast, one stderr line ``froq <command>: error: ...`` with no
    traceback and no credential; return that line."""
    start = time.monotonic()
    code = main(list(args))
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and SECRET not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"froq {args[0]}: error: "), err
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"
    return lines[0]


@dataclass(frozen=True)
class Failure:
    """A command line that must fail its preflight, and what its one error line must say.

    ``message``: the line after ``froq <command>: error: `` starts with it (the whole of it when ``whole``);
    ``names``: further parts the line must contain; ``files``: files written under ``$tmp`` first;
    ``env``: environment variables set first."""

    argv: str
    message: str = ""
    names: tuple[str, ...] = ()
    whole: bool = False
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


MOBILEFACENET = "--set model.name=mobilefacenet --set model.weights=$pt"


def unreachable(uri: str) -> str:
    return f"cannot reach {uri} at $endpoint: "


FAILURES = {
    "missing-input-folder": Failure("annotate --input $tmp/nope --output $tmp/out", names=("$tmp/nope",)),
    "misspelt-config-key-on-the-command-line": Failure(
        "annotate --input $images --output $tmp/o --set output.mod=resume", names=("output.mod", "mode")
    ),
    "bad-config-value-in-a-yaml-file": Failure(
        "annotate --config $tmp/c.yaml",
        names=("resources.actors", "$tmp/c.yaml"),
        files={
            "c.yaml": "job: annotate\ninput: {uri: $images}\noutput: {uri: $tmp/o}\nresources: {actors: 0}\n"
        },
    ),
    "key-repeated-in-a-yaml-mapping": Failure(
        "annotate --config $tmp/c.yaml",
        names=("key 'uri' appears twice in one mapping", "$tmp/c.yaml"),
        files={"c.yaml": "job: annotate\ninput: {uri: $images, uri: $tmp}\noutput: {uri: $tmp/o}\n"},
    ),
    "non-integer-value-is-one-line": Failure(
        "plan --input $images --output $tmp/o --set input.limit=abc",
        "input.limit: must be an integer (got 'abc') (command line)",
        whole=True,
    ),
    "missing-model-weights-file": Failure(
        "annotate --input $images --output $tmp/o --set model.name=mobilefacenet "
        "--set model.weights=$tmp/missing.pt",
        names=("missing.pt",),
    ),
    "misspelt-model-name": Failure(
        "annotate --input $images --output $tmp/o --set model.name=mobilefacenett",
        "unknown model 'mobilefacenett' (did you mean 'mobilefacenet'?); `froq models` lists them: ",
    ),
    "model-without-a-builtin-calibration": Failure(
        f"annotate --input $images --output $tmp/o {MOBILEFACENET}",
        names=("no built-in calibration", "mobilefacenet"),
    ),
    "unwritable-output-under-a-file": Failure(
        f"annotate --input $images --output $tmp/a_file/out --set scoring.mode=pseudo_label {MOBILEFACENET}",
        names=("$tmp/a_file/out",),
        files={"a_file": "x"},
    ),
    "identity-column-on-a-folder-input": Failure(
        "annotate --input $images --output $tmp/o --set input.identity_column=identity",
        names=("input.identity_column='identity' names a manifest column", "identity_from_folder"),
    ),
    "plan-unreachable-input": Failure(
        "plan --input s3://faces/in/ --output $tmp/o "
        "--set input.storage_options.client_kwargs.endpoint_url=$endpoint",
        unreachable("s3://faces/in/"),
    ),
    "plan-unreachable-output": Failure(
        "plan --input $images --output s3://results/run1 --set output.storage_options.endpoint_url=$endpoint",
        unreachable("s3://results/run1"),
    ),
    "annotate-unreachable-input": Failure(
        "annotate --input s3://faces/in/ --output $tmp/o --set input.storage_options.endpoint_url=$endpoint",
        unreachable("s3://faces/in/"),
    ),
    "annotate-unreachable-input-endpoint-from-the-environment": Failure(
        "annotate --input s3://faces/in/ --output $tmp/o",
        unreachable("s3://faces/in/"),
        env={"AWS_ENDPOINT_URL": "$endpoint"},
    ),
    "evaluate-unreachable-annotations": Failure(
        "evaluate --annotations s3://results/ann --output $tmp/ev "
        "--set evaluate.storage_options.endpoint_url=$endpoint",
        unreachable("s3://results/ann"),
    ),
    "evaluate-unreachable-output": Failure(
        "evaluate --annotations $tmp/ann --output s3://results/ev "
        "--set output.storage_options.client_kwargs.endpoint_url=$endpoint",
        unreachable("s3://results/ev"),
    ),
}

FIXTURE_OF = {"images": "one_image_dir", "pt": "mobilefacenet_pt", "endpoint": "closed_endpoint"}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_preflight_failure_is_one_line_naming_the_problem(capsys, monkeypatch, request, tmp_path, failure):
    texts = [failure.argv, failure.message, *failure.names, *failure.files.values(), *failure.env.values()]
    used = {name for text in texts for name in Template(text).get_identifiers()}
    values = {"tmp": str(tmp_path)} | {
        name: str(request.getfixturevalue(FIXTURE_OF[name])) for name in used - {"tmp"}
    }

    def fill(text: str) -> str:
        return Template(text).substitute(values)

    for name, text in failure.files.items():
        (tmp_path / name).write_text(fill(text))
    for name, text in failure.env.items():
        monkeypatch.setenv(name, fill(text))
    argv = [fill(piece) for piece in failure.argv.split()]  # a piece is filled after the split: one argument
    line = one_line_failure(capsys, *argv)
    message = line.removeprefix(f"froq {argv[0]}: error: ")
    if failure.whole:
        assert message == fill(failure.message)
    else:
        assert message.startswith(fill(failure.message))
    for part in failure.names:
        assert fill(part) in line


@pytest.mark.parametrize(
    "model_name, artifact_for", [("mobilefacenet", "dlib_resnet_v1"), ("dlib_resnet_v1", "mobilefacenet")]
)
def test_a_calibration_made_for_another_model_is_refused(
    capsys, tmp_path, one_image_dir, mobilefacenet_pt, model_name, artifact_for
):
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
    line = one_line_failure(
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
    assert f"made for model {artifact_for!r} and cannot be applied to model {model_name!r}" in line
    assert json.loads(artifact.read_text())["calibration_id"] in line
    assert not (tmp_path / "o").exists()


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
        str(out),
        {},
        "resume",
        config_digest(cfg, extra),
        input_digest=None,
        config=digest_payload(cfg, extra),
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


def test_ctrl_c_is_one_line_saying_how_to_resume(capsys, monkeypatch):
    from froq_ray import cli

    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "froq models: interrupted; completed shards are kept: run the same command again to resume"
    )


def test_endpoint_never_shows_credentials_in_the_url():
    options = {"endpoint_url": f"https://user:{SECRET}@s3.example.org:9000/"}
    assert endpoint_of("s3://b/k", options) == "https://s3.example.org:9000/"
    # user info but no host name (a typo) used to raise TypeError instead of naming the endpoint
    assert endpoint_of("s3://b/k", {"endpoint_url": f"http://user:{SECRET}@:9000"}) == "http://:9000"
    with pytest.raises(StorageUnreachableError) as info:
        check_reachable("s3://b/k", {"endpoint_url": f"http://user:{SECRET}@127.0.0.1:1"})
    assert SECRET not in str(info.value)


def test_reachable_locations_pass(s3):
    fs = s3.filesystem()
    fs.pipe(s3.uri("in/a.jpg").removeprefix("s3://"), b"x")
    check_reachable(s3.uri("in"), s3.storage_options)  # a prefix
    check_reachable(s3.uri("in/a.jpg"), s3.storage_options)  # an object
    check_reachable(s3.uri("not/yet"), s3.storage_options, access="write")  # missing: the caller reports it
    check_reachable("/a/local/path/that/does/not/exist")  # local paths are not checked here
