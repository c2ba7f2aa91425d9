"""An unreachable S3 endpoint and a misspelt model name fail before Ray starts, within seconds, on one line that
names the URI and the endpoint (never a credential), exit code 2."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from froq_ray.cli import main
from froq_ray.storage.fs import StorageUnreachableError, check_reachable, endpoint_of
from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)

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
    start = time.monotonic()
    code = main(list(args))
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and SECRET not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"
    return lines[0]


def test_plan_with_unreachable_input(capsys, tmp_path, closed_endpoint):
    line = one_line_failure(
        capsys,
        "plan",
        "--input",
        "s3://faces/in/",
        "--output",
        str(tmp_path / "o"),
        "--set",
        f"input.storage_options.client_kwargs.endpoint_url={closed_endpoint}",
    )
    assert line.startswith(f"froq plan: error: cannot reach s3://faces/in/ at {closed_endpoint}: ")


def test_plan_with_unreachable_output(capsys, one_image_dir, closed_endpoint):
    line = one_line_failure(
        capsys,
        "plan",
        "--input",
        str(one_image_dir),
        "--output",
        "s3://results/run1",
        "--set",
        f"output.storage_options.endpoint_url={closed_endpoint}",
    )
    assert line.startswith(f"froq plan: error: cannot reach s3://results/run1 at {closed_endpoint}: ")


def test_annotate_with_unreachable_input(capsys, tmp_path, closed_endpoint):
    line = one_line_failure(
        capsys,
        "annotate",
        "--input",
        "s3://faces/in/",
        "--output",
        str(tmp_path / "o"),
        "--set",
        f"input.storage_options.endpoint_url={closed_endpoint}",
    )
    assert line.startswith(f"froq annotate: error: cannot reach s3://faces/in/ at {closed_endpoint}: ")


def test_annotate_with_the_endpoint_from_the_environment(capsys, tmp_path, closed_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_endpoint)
    line = one_line_failure(capsys, "annotate", "--input", "s3://faces/in/", "--output", str(tmp_path / "o"))
    assert line.startswith(f"froq annotate: error: cannot reach s3://faces/in/ at {closed_endpoint}: ")


def test_evaluate_with_unreachable_annotations(capsys, tmp_path, closed_endpoint):
    line = one_line_failure(
        capsys,
        "evaluate",
        "--annotations",
        "s3://results/ann",
        "--output",
        str(tmp_path / "ev"),
        "--set",
        f"evaluate.storage_options.endpoint_url={closed_endpoint}",
    )
    assert line.startswith(f"froq evaluate: error: cannot reach s3://results/ann at {closed_endpoint}: ")


def test_evaluate_with_unreachable_output(capsys, tmp_path, closed_endpoint):
    line = one_line_failure(
        capsys,
        "evaluate",
        "--annotations",
        str(tmp_path / "ann"),
        "--output",
        "s3://results/ev",
        "--set",
        f"output.storage_options.client_kwargs.endpoint_url={closed_endpoint}",
    )
    assert line.startswith(f"froq evaluate: error: cannot reach s3://results/ev at {closed_endpoint}: ")


def test_misspelt_model_name(capsys, tmp_path, one_image_dir):
    line = one_line_failure(
        capsys,
        "annotate",
        "--input",
        str(one_image_dir),
        "--output",
        str(tmp_path / "o"),
        "--set",
        "model.name=mobilefacenett",
    )
    assert line.startswith(
        "froq annotate: error: unknown model 'mobilefacenett' (did you mean 'mobilefacenet'?); `froq models` "
        "lists them: "
    )


def test_endpoint_never_shows_credentials_in_the_url():
    options = {"endpoint_url": f"https://user:{SECRET}@s3.example.org:9000/"}
    assert endpoint_of("s3://b/k", options) == "https://s3.example.org:9000/"
    # user info but no host name (a typo) used to raise TypeError instead of naming the endpoint
    assert endpoint_of("s3://b/k", {"endpoint_url": f"http://user:{SECRET}@:9000"}) == "http://:9000"
    with pytest.raises(StorageUnreachableError) as info:
        check_reachable("s3://b/k", {"endpoint_url": f"http://user:{SECRET}@127.0.0.1:1"})
    assert SECRET not in str(info.value)


def test_reachable_locations_pass(s3):  # noqa: F811 - the s3 fixture imported above
    fs = s3.filesystem()
    fs.pipe(s3.uri("in/a.jpg").removeprefix("s3://"), b"x")
    check_reachable(s3.uri("in"), s3.storage_options)  # a prefix
    check_reachable(s3.uri("in/a.jpg"), s3.storage_options)  # an object
    check_reachable(s3.uri("not/yet"), s3.storage_options, access="write")  # missing: the caller reports it
    check_reachable("/a/local/path/that/does/not/exist")  # local paths are not checked here
