"""fsspec helpers: redaction, URI joins, env endpoint, atomic JSON writes (local and on the local S3)."""

from __future__ import annotations

from froq_ray.storage.fs import (
    is_absolute_uri,
    is_remote,
    join_uri,
    open_fs,
    parent_uri,
    protocol_of,
    read_json,
    redact,
    to_uri,
    with_env_endpoint,
    write_json_atomic,
)
from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)


def test_redact_hides_secret_keys_recursively():
    options = {
        "key": "AKIA",
        "secret": "s",
        "token": "t",
        "aws_session_token": "t2",
        "password": "p",
        "credentials": {"a": 1},
        "anon": False,
        "endpoint_url": "http://h",
        "client_kwargs": {"aws_secret_access_key": "x", "region_name": "eu"},
    }
    assert redact(options) == {
        "key": "***",
        "secret": "***",
        "token": "***",
        "aws_session_token": "***",
        "password": "***",
        "credentials": "***",
        "anon": False,
        "endpoint_url": "http://h",
        "client_kwargs": {"aws_secret_access_key": "***", "region_name": "eu"},
    }
    assert options["key"] == "AKIA"
    assert redact(None) == {}


def test_uri_helpers():
    assert join_uri("s3://b/p/", "x", "part-00000.parquet") == "s3://b/p/x/part-00000.parquet"
    assert join_uri("s3://b", "x") == "s3://b/x"
    assert join_uri("/data/out", "_run.json") == "/data/out/_run.json"
    assert join_uri("/", "a") == "/a"
    assert parent_uri("s3://b/p/m.csv") == "s3://b/p"
    assert parent_uri("/data/m.csv") == "/data"
    assert (protocol_of("s3://b/k"), protocol_of("/x"), protocol_of("file:///x")) == ("s3", "file", "file")
    assert is_remote("s3://b") and not is_remote("/x") and not is_remote("rel/x")
    assert is_absolute_uri("s3://b/k") and is_absolute_uri("/k") and not is_absolute_uri("k/x.jpg")


def test_env_endpoint_used_only_when_options_name_none(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert with_env_endpoint("s3", {}) == {"endpoint_url": "http://env:1"}
    assert with_env_endpoint("s3", {"endpoint_url": "http://opt:2"}) == {"endpoint_url": "http://opt:2"}
    nested = {"client_kwargs": {"endpoint_url": "http://opt:3"}}
    assert with_env_endpoint("s3", nested) == nested
    assert with_env_endpoint("file", {}) == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://env-s3:4")
    assert with_env_endpoint("s3", None) == {"endpoint_url": "http://env-s3:4"}


def test_open_fs_local_ignores_storage_options(tmp_path):
    fs, path = open_fs(str(tmp_path), {"key": "x"})
    assert path == str(tmp_path)
    assert to_uri(fs, path) == str(tmp_path)


def test_json_atomic_local_leaves_no_temp(tmp_path):
    fs, path = open_fs(str(tmp_path))
    write_json_atomic(fs, f"{path}/a.json", {"b": 1, "a": [1, 2]})
    assert read_json(fs, f"{path}/a.json") == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_open_fs_s3_via_env_endpoint_and_json(s3, monkeypatch):  # noqa: F811 - the s3 fixture imported above
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    fs, path = open_fs(s3.uri("dir"), {})  # endpoint and credentials both from the environment
    assert path == f"{s3.bucket}/dir"
    write_json_atomic(fs, f"{path}/x.json", {"ok": True})
    assert read_json(fs, f"{path}/x.json") == {"ok": True}
    assert to_uri(fs, f"{path}/x.json") == s3.uri("dir", "x.json")
    assert s3.filesystem().ls(f"{s3.bucket}/dir") == [f"{s3.bucket}/dir/x.json"]
