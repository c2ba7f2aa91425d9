"""Batched reads: bytes for readable objects, None + a message for the rest, order kept (local and S3)."""

from __future__ import annotations

from froq_ray.storage import reader
from froq_ray.storage.reader import read_blobs
from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)


def test_local_bytes_errors_and_empty(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8abc")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "[weird] name?.jpg").write_bytes(b"glob chars are not patterns")
    (tmp_path / "folder.jpg").mkdir()
    paths = [
        str(tmp_path / n) for n in ("a.jpg", "missing.jpg", "empty.png", "[weird] name?.jpg", "folder.jpg")
    ]
    blobs, errors = read_blobs(paths, {})
    assert blobs[0] == b"\xff\xd8abc" and errors[0] is None
    assert blobs[1] is None and errors[1] == f"{paths[1]}: not found"
    assert blobs[2] == b"" and errors[2] is None
    assert blobs[3] == b"glob chars are not patterns" and errors[3] is None
    assert blobs[4] is None and errors[4].startswith(f"{paths[4]}: ")
    assert read_blobs([], None) == ([], [])


def test_s3_and_local_mixed_batch_keeps_order(s3, tmp_path):  # noqa: F811 - the s3 fixture imported above
    fs = s3.filesystem()
    fs.pipe(f"{s3.bucket}/img/1.jpg", b"one")
    fs.pipe(f"{s3.bucket}/img/2.jpg", b"two" * 1000)
    (tmp_path / "local.jpg").write_bytes(b"local")
    paths = [
        s3.uri("img/2.jpg"),
        str(tmp_path / "local.jpg"),
        s3.uri("img/nope.jpg"),
        s3.uri("img/1.jpg"),
        "s3://no-such-bucket-froq/x.jpg",
    ]
    blobs, errors = read_blobs(paths, s3.storage_options)
    assert blobs[:2] == [b"two" * 1000, b"local"] and errors[:2] == [None, None]
    assert blobs[2] is None and errors[2] == f"{paths[2]}: not found"
    assert blobs[3] == b"one" and errors[3] is None
    assert blobs[4] is None and errors[4].startswith(paths[4])


def test_unreachable_endpoint_is_an_error_per_item_not_an_exception():
    options = {
        "endpoint_url": "http://127.0.0.1:9",
        "key": "k",
        "secret": "s",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    blobs, errors = read_blobs(["s3://b/x.jpg", "s3://b/y.jpg"], options)
    assert blobs == [None, None]
    assert all(e.startswith("s3://b/") for e in errors)


def test_filesystem_cached_per_process(s3, monkeypatch):  # noqa: F811 - the s3 fixture imported above
    built = []
    original = reader.filesystem
    monkeypatch.setattr(reader, "_FS_CACHE", {})
    monkeypatch.setattr(reader, "filesystem", lambda *a: built.append(a) or original(*a))
    s3.filesystem().pipe(f"{s3.bucket}/k.jpg", b"k")
    for _ in range(3):
        assert read_blobs([s3.uri("k.jpg")], dict(s3.storage_options))[0] == [b"k"]
    assert len(built) == 1
