"""Output run state: resume / refuse / force / overwrite / error_if_exists, writability probe, manifest.

Every behaviour runs on a local folder and on the local S3 server.
"""

from __future__ import annotations

import pandas as pd
import pytest

from froq_ray.storage.fs import read_json
from froq_ray.storage.manifest import read_manifest, write_manifest
from froq_ray.storage.run_state import RUN_FILE, OutputStateError, check_writable, prepare_output
from froq_ray.storage.schema import annotation_schema, to_table
from froq_ray.storage.shards import Shard, list_names, write_shard
from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)

CFG, INP = "c" * 64, "i" * 64


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    """(output URI, storage options) on a local folder or in a fresh S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "out"), {}
    location = request.getfixturevalue("s3")
    return location.uri("runs/out"), location.storage_options


def one_row_table():
    columns = {
        "path": ["/x.jpg"],
        "identity": [None],
        "status": ["ok"],
        "error": [None],
        "quality": [1.0],
        "width": [1],
        "height": [1],
        "model_id": ["m"],
        "calibration_id": ["c"],
    }
    return to_table(columns, annotation_schema(None, []))


def write_shards(state, indices, digest="shard-digest"):
    for i in indices:
        write_shard(state.fs, state.path, Shard(i, i, i + 1), one_row_table(), digest)


def put(state, name: str, data: bytes = b"x") -> None:
    state.fs.makedirs(state.fs._parent(f"{state.path}/{name}"), exist_ok=True)
    state.fs.pipe_file(f"{state.path}/{name}", data)
    state.fs.invalidate_cache(state.path)


def test_fresh_output_then_resume_skips_completed(out):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, INP)
    assert state.completed == frozenset() and not state.resumed
    run = read_json(state.fs, f"{state.path}/{RUN_FILE}")
    assert (run["config_digest"], run["input_digest"], run["schema_version"]) == (CFG, INP, "1")
    write_shards(state, [0, 2])

    again = prepare_output(uri, options, "resume", CFG, INP)
    assert again.resumed and not again.forced
    assert again.completed == frozenset({0, 2})
    assert again.is_done(0, "shard-digest") and not again.is_done(0, "other-rows") and not again.is_done(1)
    assert read_json(again.fs, f"{again.path}/{RUN_FILE}") == run  # a resume rewrites nothing


@pytest.mark.parametrize("changed", ["config", "input"])
def test_resume_refuses_changed_digest_unless_forced(out, changed):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, INP)
    write_shards(state, [0])
    new_cfg, new_inp = ("d" * 64, INP) if changed == "config" else (CFG, "j" * 64)
    what = "the config differs" if changed == "config" else "the input listing differs"
    with pytest.raises(OutputStateError, match=f"cannot resume into {uri}: {what}.*--force"):
        prepare_output(uri, options, "resume", new_cfg, new_inp)

    forced = prepare_output(uri, options, "resume", new_cfg, new_inp, force=True)
    assert forced.forced and forced.completed == frozenset({0})
    run = read_json(forced.fs, f"{forced.path}/{RUN_FILE}")
    assert (run["config_digest"], run["input_digest"]) == (new_cfg, new_inp)
    follow_up = prepare_output(uri, options, "resume", new_cfg, new_inp)
    assert follow_up.resumed and not follow_up.forced


def test_resume_refuses_parts_of_unknown_origin(out):
    uri, options = out
    state = prepare_output(uri, options, "overwrite", CFG, INP)
    write_shards(state, [0])
    state.fs.rm_file(f"{state.path}/{RUN_FILE}")
    with pytest.raises(OutputStateError, match="no _froq/run.json"):
        prepare_output(uri, options, "resume", CFG, INP)
    assert prepare_output(uri, options, "resume", CFG, INP, force=True).completed == frozenset({0})


def test_overwrite_deletes_only_our_files(out):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, INP)
    write_shards(state, [0, 1])
    write_manifest(uri, options, {"counts": {"ok": 2}})
    put(state, ".part-00001.parquet.tmp-" + "0" * 32)
    put(state, "notes.txt")
    put(state, "part-1.parquet")  # not our naming scheme
    put(state, "mine.tmp-keep")
    put(state, "sub/part-00000.parquet")  # in a subfolder: not ours to touch

    fresh = prepare_output(uri, options, "overwrite", "d" * 64, INP)
    assert fresh.completed == frozenset() and not fresh.resumed
    assert list_names(fresh.fs, fresh.path) == ["mine.tmp-keep", "notes.txt", "part-1.parquet"]
    assert list_names(fresh.fs, f"{fresh.path}/_froq") == ["run.json"]
    assert fresh.fs.exists(f"{fresh.path}/sub/part-00000.parquet")
    assert read_json(fresh.fs, f"{fresh.path}/{RUN_FILE}")["config_digest"] == "d" * 64


def test_error_if_exists(out):
    uri, options = out
    state = prepare_output(uri, options, "error_if_exists", CFG, INP)  # empty: fine
    put(state, "README.txt")
    prepare_output(uri, options, "error_if_exists", CFG, INP)  # foreign files only: fine
    write_shards(state, [0])
    with pytest.raises(OutputStateError, match=f"output {uri} already holds 2 shard file"):
        prepare_output(uri, options, "error_if_exists", CFG, INP)


def test_resume_removes_stale_temp_files(out):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, INP)
    stale = "._part-00004.done.json.tmp-" + "a" * 32
    put(state, stale)
    prepare_output(uri, options, "resume", CFG, INP)
    assert stale not in list_names(state.fs, state.path)


def test_check_writable_probe(out):
    uri, options = out
    check_writable(uri, options)
    state = prepare_output(uri, options, "resume", CFG, INP)
    assert list_names(state.fs, state.path) == []  # the probe is gone
    assert list_names(state.fs, f"{state.path}/_froq") == ["run.json"]


def test_check_writable_failures_name_the_output(tmp_path, s3):  # noqa: F811
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputStateError, match=f"output {blocker}/out is not writable"):
        check_writable(str(blocker / "out"), {})
    missing_bucket = "s3://froq-no-such-bucket/out"
    with pytest.raises(
        OutputStateError, match=f"output {missing_bucket} is not writable: .*NoSuchBucket|bucket"
    ):
        check_writable(missing_bucket, s3.storage_options)
    assert not s3.filesystem().exists("froq-no-such-bucket")  # never created as a side effect


def test_manifest_round_trip_redacts_credentials(out):
    uri, options = out
    manifest = {
        "config": {"input": {"storage_options": {"secret": "s3cr3t", "endpoint_url": "http://h"}}},
        "counts": {"ok": 3, "corrupt": 1},
        "throughput_images_per_s": 12.5,
    }
    written = write_manifest(uri, options, manifest)
    assert written == uri.rstrip("/") + "/_froq/manifest.json"
    back = read_manifest(uri, options)
    assert back["counts"] == {"ok": 3, "corrupt": 1} and back["throughput_images_per_s"] == 12.5
    assert back["config"]["input"]["storage_options"] == {"secret": "***", "endpoint_url": "http://h"}
    assert manifest["config"]["input"]["storage_options"]["secret"] == "s3cr3t"


def test_read_manifest_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run manifest at"):
        read_manifest(str(tmp_path))


def test_plain_pandas_reads_the_output_folder(out):
    """Markers, run files and leftover temp files never get in the way of pandas.read_parquet(<folder>)."""
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, INP)
    write_shards(state, [0, 1, 2])
    write_manifest(uri, options, {"counts": {"ok": 3}})
    put(state, ".part-00003.parquet.tmp-" + "b" * 32, b"half a parquet file")
    df = pd.read_parquet(uri, storage_options=options or None)
    assert len(df) == 3 and df["status"].tolist() == ["ok"] * 3
