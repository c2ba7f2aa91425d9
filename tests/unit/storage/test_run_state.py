"""Output run state: resume / refuse / force / overwrite / error_if_exists, writability probe, manifest.

Every behaviour runs on a local folder and on the local S3 server.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from froq_ray.storage.fs import read_json
from froq_ray.storage.location import Location
from froq_ray.storage.manifest import (
    HEADER_KEYS,
    NonFiniteManifestValueError,
    RunManifest,
    read_manifest,
    write_manifest,
)
from froq_ray.storage.run_state import RUN_FILE, OutputStateError, check_writable, prepare_output
from froq_ray.storage.schema import annotation_schema, to_table
from froq_ray.storage.shards import Shard, list_names, write_shard
from froq_ray.versions import software_versions
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
        write_shard(state.fs, state.path, Shard(i, i, i + 1), one_row_table(), shard_input_digest=digest)


def put(state, name: str, data: bytes = b"x") -> None:
    state.fs.makedirs(state.fs._parent(f"{state.path}/{name}"), exist_ok=True)
    state.fs.pipe_file(f"{state.path}/{name}", data)
    state.fs.invalidate_cache(state.path)


def test_fresh_output_then_resume_skips_completed(out):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    assert state.completed == frozenset() and not state.resumed
    run = read_json(state.fs, f"{state.path}/{RUN_FILE}")
    assert (run["config_digest"], run["input_digest"], run["schema_version"]) == (CFG, INP, "1")
    write_shards(state, [0, 2])

    again = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    assert again.resumed and not again.forced
    assert again.completed == frozenset({0, 2})
    assert again.is_done(0, "shard-digest") and not again.is_done(0, "other-rows") and not again.is_done(1)
    assert read_json(again.fs, f"{again.path}/{RUN_FILE}") == run  # a resume rewrites nothing


@pytest.mark.parametrize("changed", ["config", "input"])
def test_resume_refuses_changed_digest_unless_forced(out, changed):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    write_shards(state, [0])
    new_cfg, new_inp = ("d" * 64, INP) if changed == "config" else (CFG, "j" * 64)
    what = "the config differs" if changed == "config" else "the input listing differs"
    with pytest.raises(OutputStateError, match=f"cannot resume into {uri}: {what}.*--force"):
        prepare_output(uri, options, "resume", new_cfg, input_digest=new_inp)

    forced = prepare_output(uri, options, "resume", new_cfg, input_digest=new_inp, force=True)
    assert forced.forced and forced.completed == frozenset({0})
    run = read_json(forced.fs, f"{forced.path}/{RUN_FILE}")
    assert (run["config_digest"], run["input_digest"]) == (new_cfg, new_inp)
    follow_up = prepare_output(uri, options, "resume", new_cfg, input_digest=new_inp)
    assert follow_up.resumed and not follow_up.forced


def test_resume_refuses_parts_of_unknown_origin(out):
    uri, options = out
    state = prepare_output(uri, options, "overwrite", CFG, input_digest=INP)
    write_shards(state, [0])
    state.fs.rm_file(f"{state.path}/{RUN_FILE}")
    with pytest.raises(OutputStateError, match="no _froq/run.json"):
        prepare_output(uri, options, "resume", CFG, input_digest=INP)
    assert prepare_output(uri, options, "resume", CFG, input_digest=INP, force=True).completed == frozenset(
        {0}
    )


def test_overwrite_deletes_only_our_files(out):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    write_shards(state, [0, 1])
    write_manifest(Location(uri, options), manifest_of({"ok": 2}))
    put(state, ".part-00001.parquet.tmp-" + "0" * 32)
    put(state, "notes.txt")
    put(state, "part-1.parquet")  # not our naming scheme
    put(state, "mine.tmp-keep")
    put(state, "sub/part-00000.parquet")  # in a subfolder: not ours to touch

    fresh = prepare_output(uri, options, "overwrite", "d" * 64, input_digest=INP)
    assert fresh.completed == frozenset() and not fresh.resumed
    assert list_names(fresh.fs, fresh.path) == ["mine.tmp-keep", "notes.txt", "part-1.parquet"]
    assert list_names(fresh.fs, f"{fresh.path}/_froq") == ["run.json"]
    assert fresh.fs.exists(f"{fresh.path}/sub/part-00000.parquet")
    assert read_json(fresh.fs, f"{fresh.path}/{RUN_FILE}")["config_digest"] == "d" * 64


def test_error_if_exists(out):
    uri, options = out
    state = prepare_output(uri, options, "error_if_exists", CFG, input_digest=INP)  # empty: fine
    put(state, "README.txt")
    prepare_output(uri, options, "error_if_exists", CFG, input_digest=INP)  # foreign files only: fine
    write_shards(state, [0])
    with pytest.raises(OutputStateError, match=f"output {uri} already holds 2 shard file"):
        prepare_output(uri, options, "error_if_exists", CFG, input_digest=INP)


def test_resume_removes_stale_temp_files(out):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    stale = "._part-00004.done.json.tmp-" + "a" * 32
    put(state, stale)
    prepare_output(uri, options, "resume", CFG, input_digest=INP)
    assert stale not in list_names(state.fs, state.path)


def test_check_writable_probe(out):
    uri, options = out
    check_writable(uri, options)
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    assert list_names(state.fs, state.path) == []  # the probe is gone
    assert list_names(state.fs, f"{state.path}/_froq") == ["run.json"]


def test_check_writable_failures_name_the_output(tmp_path, s3):  # noqa: F811 - the s3 fixture imported above
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
    config = {"input": {"storage_options": {"secret": "s3cr3t", "endpoint_url": "http://h"}}}
    manifest = RunManifest(
        "annotate",
        "2026-01-01T00:00:00Z",
        config,
        CFG,
        {"ok": 3, "corrupt": 1},
        {"read": 1.23456},
        {"throughput_images_per_s": 12.5},
    )
    written = write_manifest(Location(uri, options), manifest)
    back = read_manifest(uri, options)
    assert read_manifest(Location(uri, options)) == back
    assert back == written and set(back) == {*HEADER_KEYS, "results"}
    assert back["counts_by_status"] == {"ok": 3, "corrupt": 1} and back["stage_seconds"] == {"read": 1.235}
    assert back["results"] == {"throughput_images_per_s": 12.5} and back["versions"] == software_versions()
    assert back["config"]["input"]["storage_options"] == {"secret": "***", "endpoint_url": "http://h"}
    assert config["input"]["storage_options"]["secret"] == "s3cr3t"
    assert "s3cr3t" not in json.dumps(back)
    with pytest.raises(TypeError, match="RunManifest"):
        write_manifest(Location(uri, options), {"job": "annotate"})


def manifest_of(counts: dict[str, int]) -> RunManifest:
    return RunManifest("annotate", "2026-01-01T00:00:00Z", {}, CFG, counts)


def test_read_manifest_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run manifest at"):
        read_manifest(str(tmp_path))


def test_plain_pandas_reads_the_output_folder(out):
    """Markers, run files and leftover temp files never get in the way of pandas.read_parquet(<folder>)."""
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    write_shards(state, [0, 1, 2])
    write_manifest(Location(uri, options), manifest_of({"ok": 3}))
    put(state, ".part-00003.parquet.tmp-" + "b" * 32, b"half a parquet file")
    df = pd.read_parquet(uri, storage_options=options or None)
    assert len(df) == 3 and df["status"].tolist() == ["ok"] * 3


def test_every_parquet_reader_reads_exactly_the_parts(tmp_path):
    """pandas and pyarrow on the folder, duckdb and polars on ``<folder>/*.parquet``: the parts and nothing
    else, with markers, run record, input listing, manifest, a calibration artifact and a temp file present."""
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    uri = str(tmp_path / "out")
    listing = pd.DataFrame({"path": ["/x.jpg", "/y.jpg", "/z.jpg"], "identity": [None, "a", "b"]})
    state = prepare_output(uri, {}, "resume", CFG, input_digest=INP, listing=listing)
    write_shards(state, [0, 1, 2])
    write_manifest(Location(uri), manifest_of({"ok": 3}))
    put(state, "_froq/calibration.json", b"{}")
    put(state, ".part-00003.parquet.tmp-" + "b" * 32, b"half a parquet file")
    assert sorted(p.name for p in (tmp_path / "out" / "_froq").iterdir()) == [
        "calibration.json",
        "inputs.parquet",
        "manifest.json",
        "part-00000.done.json",
        "part-00001.done.json",
        "part-00002.done.json",
        "run.json",
    ]
    expected = ["/x.jpg"] * 3
    assert pd.read_parquet(uri)["path"].tolist() == expected
    assert pq.read_table(uri).column("path").to_pylist() == expected
    assert ds.dataset(uri, format="parquet").to_table().column("path").to_pylist() == expected
    assert duckdb.sql(f"select path from read_parquet('{uri}/*.parquet')").fetchall() == [
        (p,) for p in expected
    ]
    assert pl.read_parquet(f"{uri}/*.parquet")["path"].to_list() == expected
    for name in ("identity", "error"):  # nulls as nulls in every reader, not the text "nan"
        assert pd.read_parquet(uri)[name].isna().all() and pq.read_table(uri).column(name).null_count == 3
        assert pl.read_parquet(f"{uri}/*.parquet")[name].null_count() == 3
        assert duckdb.sql(
            f"select count(*) from read_parquet('{uri}/*.parquet') where {name} is null"
        ).fetchall() == [(3,)]


def refusal(uri, options, config_digest, input_digest, **kwargs) -> str:
    with pytest.raises(OutputStateError) as info:
        prepare_output(uri, options, "resume", config_digest, input_digest=input_digest, **kwargs)
    return str(info.value)


def test_resume_refusal_names_changed_keys_and_inputs(out):
    uri, options = out
    config = {
        "job": "annotate",
        "scoring": {"precision": "fp32", "perturbation": {"noise_seed": 0, "noise_alphas": [0.001]}},
        "model": {"name": "mobilefacenet", "options": {}},
        "_extra": {"weights_sha256": "a" * 64, "api_token": "t0ps3cret"},
    }
    listing = pd.DataFrame(
        {"path": ["/in/a/1.jpg", "/in/a/2.jpg", "/in/b/1.jpg"], "identity": ["a", "a", "b"]}
    )
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP, config=config, listing=listing)
    write_shards(state, [0])
    run = read_json(state.fs, f"{state.path}/{RUN_FILE}")
    assert run["config"] == config and run["inputs"] == 3

    changed = {
        **config,
        "scoring": {"precision": "bf16", "perturbation": {"noise_seed": 1, "noise_alphas": [0.001]}},
        "model": {"name": "mobilefacenet", "options": {"width": 2}},
        "_extra": {"weights_sha256": "a" * 64, "api_token": "n3wsecret"},
    }
    message = refusal(uri, options, "d" * 64, INP, config=changed, listing=listing)
    lines = message.splitlines()
    assert (
        lines[0].startswith(f"cannot resume into {uri}: the config differs in 4 key(s)")
        and "--force" in lines[0]
    )
    assert lines[1:] == [
        "  _extra.api_token: *** -> ***",
        "  model.options.width: (absent) -> 2",
        "  scoring.perturbation.noise_seed: 0 -> 1",
        '  scoring.precision: "fp32" -> "bf16"',
    ]
    assert "t0ps3cret" not in message and "n3wsecret" not in message

    moved = pd.DataFrame(
        {
            "path": ["/in/a/1.jpg", "/in/a/3.jpg", "/in/b/1.jpg", "/in/c/1.jpg"],
            "identity": ["a", "a", "b", None],
        }
    )
    message = refusal(uri, options, CFG, "j" * 64, config=config, listing=moved)
    assert message.splitlines()[0].startswith(f"cannot resume into {uri}: the input listing differs.")
    assert message.splitlines()[1] == (
        "  inputs: 3 before, 4 now; first difference at row 1: /in/a/2.jpg (identity 'a') before, "
        "/in/a/3.jpg (identity 'a') now"
    )
    relabelled = listing.assign(identity=["a", "a", None])
    message = refusal(uri, options, CFG, "k" * 64, config=config, listing=relabelled)
    assert message.splitlines()[1] == (
        "  inputs: 3 before, 3 now; first difference at row 2: /in/b/1.jpg (identity 'b') before, "
        "/in/b/1.jpg (no identity) now"
    )
    longer = pd.concat([listing, moved.tail(1)], ignore_index=True)
    message = refusal(uri, options, CFG, "l" * 64, config=config, listing=longer)
    assert (
        message.splitlines()[1]
        == "  inputs: 3 before, 4 now; first difference at row 3: /in/c/1.jpg (no identity) new"
    )


def test_refusal_lists_at_most_ten_keys(tmp_path):
    uri = str(tmp_path / "out")
    prepare_output(uri, {}, "resume", CFG, input_digest=INP, config={f"k{i:02d}": i for i in range(12)})
    message = refusal(uri, {}, "d" * 64, INP, config={f"k{i:02d}": -i for i in range(1, 13)})
    lines = message.splitlines()
    assert "differs in 13 key(s)" in lines[0] and len(lines) == 12 and lines[-1] == "  ... and 3 more"
    assert lines[1:3] == ["  k00: 0 -> (absent)", "  k01: 1 -> -1"]


def test_old_layout_resume_is_refused_and_overwrite_cleans_it(out):
    """Outputs of versions that kept their bookkeeping beside the parts: resume refuses (even with force),
    error_if_exists counts the old markers, overwrite deletes every old file and nothing else."""
    uri, options = out
    state = prepare_output(uri, options, "overwrite", CFG, input_digest=INP)
    write_shards(state, [0])
    state.fs.rm(f"{state.path}/_froq", recursive=True)
    for name in ("_run.json", "_part-00000.done.json", "_manifest.json", "_calibration.json", "notes.txt"):
        put(state, name, b"{}")
    for force in (False, True):
        message = refusal(uri, options, CFG, INP, force=force)
        assert "written by an older froq_ray" in message and "output.mode=overwrite" in message
    with pytest.raises(OutputStateError, match="already holds 2 shard file"):
        prepare_output(uri, options, "error_if_exists", CFG, input_digest=INP)
    fresh = prepare_output(uri, options, "overwrite", CFG, input_digest=INP)
    assert list_names(fresh.fs, fresh.path) == ["notes.txt"]
    assert prepare_output(uri, options, "resume", CFG, input_digest=INP).resumed


def test_shards_outside_the_plan_are_discarded_before_a_run(out):
    """A forced resume under another shard layout must not keep old parts beside new ones (rows twice)."""
    from froq_ray.storage.run_state import discard_stale_shards

    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    write_shards(state, [0, 1, 2, 3])  # old layout: shard i = rows [i, i + 1)
    put(state, "part-00005.parquet")  # a part whose marker was never written (an interrupted write)
    state.fs.rm_file(f"{state.path}/part-00003.parquet")  # a marker whose part is gone
    again = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    # the new plan: shard 0 unchanged, shard 1 = rows [1, 3), shards 2 and 3 gone
    deleted = discard_stale_shards(again, {0: (0, 1), 1: (1, 3)})
    assert deleted == 6  # markers 1, 2, 3 (3: its part is gone) and parts 1, 2 and the orphan part 5
    names = list_names(again.fs, again.path)
    assert [n for n in names if n.startswith("part-")] == ["part-00000.parquet"]
    assert list_names(again.fs, f"{again.path}/_froq") == ["part-00000.done.json", "run.json"]
    assert set(again.markers) == {0}


def test_shards_of_another_input_listing_are_discarded(out):
    """A forced resume lists the input again: shards made from another listing are redone, not kept."""
    from froq_ray.storage.run_state import discard_stale_shards
    from froq_ray.storage.shards import Shard, write_shard

    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    for i, listing in ((0, "old"), (1, "new")):
        write_shard(
            state.fs,
            state.path,
            Shard(i, i, i + 1),
            one_row_table(),
            shard_input_digest="d",
            extra={"inputs_digest": listing},
        )
    again = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    assert discard_stale_shards(again, {0: (0, 1), 1: (1, 2)}, "new") == 2  # marker and part of shard 0
    assert set(again.markers) == {1}


def test_overwrite_removes_the_earlier_input_listing(out):
    uri, options = out
    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    put(state, "_froq/inputs/plan.json", b"{}")
    put(state, "_froq/inputs/part-00000-00000.parquet")
    prepare_output(uri, options, "overwrite", CFG, input_digest=INP)
    state.fs.invalidate_cache()
    assert not state.fs.exists(f"{state.path}/_froq/inputs/plan.json")


def test_a_dry_run_decides_the_same_and_changes_nothing(out, tmp_path):
    """``froq plan``: the same refusals and kept markers as the run, no file created, deleted or written."""
    from froq_ray.storage.run_state import discard_stale_shards, record_input_digest

    uri, options = out
    fresh_uri = str(tmp_path / "never-created") if not options else uri + "-fresh"
    dry = prepare_output(fresh_uri, options, "resume", CFG, input_digest=INP, dry_run=True)
    assert not dry.resumed and not dry.fs.exists(dry.path)  # a fresh output is not even created

    state = prepare_output(uri, options, "resume", CFG, input_digest=INP)
    write_shards(state, [0, 1])
    put(state, ".part-00001.parquet.tmp-" + "0" * 32)  # a leftover a run would delete

    def snapshot():
        state.fs.invalidate_cache()
        return sorted(state.fs.find(state.path))

    before = snapshot()
    dry = prepare_output(uri, options, "resume", CFG, input_digest=INP, dry_run=True)
    assert dry.resumed and set(dry.markers) == {0, 1}
    assert discard_stale_shards(dry, {0: (0, 1)}, dry_run=True) == 2  # shard 1's marker and part, kept
    assert set(dry.markers) == {0}
    record_input_digest(dry, INP, dry_run=True)
    for mode in ("overwrite", "error_if_exists"):
        if mode == "error_if_exists":
            with pytest.raises(OutputStateError, match=f"output {uri} already holds 4 shard file"):
                prepare_output(uri, options, mode, CFG, input_digest=INP, dry_run=True)
        else:
            assert prepare_output(uri, options, mode, "d" * 64, input_digest=INP, dry_run=True).markers == {}
    with pytest.raises(OutputStateError, match="cannot resume into") as refused:
        prepare_output(uri, options, "resume", "d" * 64, input_digest=INP, dry_run=True)
    forced = prepare_output(uri, options, "resume", "d" * 64, input_digest=INP, force=True, dry_run=True)
    assert forced.forced and forced.resumed
    assert snapshot() == before
    with pytest.raises(OutputStateError) as run_refused:  # the run (it removes the leftover first)
        prepare_output(uri, options, "resume", "d" * 64, input_digest=INP)
    assert str(refused.value) == str(run_refused.value)  # the plan states the run's own reason


@pytest.mark.parametrize(
    ("results", "keys"),
    [
        ({"this_run": {"seconds": float("inf")}}, "results.this_run.seconds"),
        ({"quantiles": [0.5, float("nan")]}, "results.quantiles[1]"),
        ({"a": -float("inf"), "b": {"c": (1, float("nan"))}}, "results.a, results.b.c[1]"),
        ({"rate": np.float32("inf")}, "results.rate"),
    ],
)
def test_a_non_finite_number_in_a_manifest_is_an_error_naming_it_and_nothing_is_written(out, results, keys):
    uri, options = out
    manifest = RunManifest("annotate", "2026-01-01T00:00:00Z", {}, CFG, {"ok": 1}, {}, results)
    with pytest.raises(NonFiniteManifestValueError) as info:
        write_manifest(Location(uri, options), manifest)
    assert str(info.value).endswith(f"(inf or nan; not strict JSON) at {keys}")
    with pytest.raises(FileNotFoundError):
        read_manifest(uri, options)
    # the config is checked too (it holds user values: a non-finite one must never reach the file)
    bad_config = RunManifest("annotate", "2026-01-01T00:00:00Z", {"resources": {"x": float("inf")}}, CFG)
    with pytest.raises(NonFiniteManifestValueError, match=r"at config\.resources\.x$"):
        write_manifest(Location(uri, options), bad_config)
    # finite values (ints, floats, a NumPy float, booleans, None) are written and read back as strict JSON
    fine = RunManifest(
        "annotate",
        "2026-01-01T00:00:00Z",
        {},
        CFG,
        {"ok": 1},
        {},
        {"x": np.float64(1.5), "n": None, "b": True},
    )
    write_manifest(Location(uri, options), fine)
    fs_text = json.dumps(read_manifest(uri, options), allow_nan=False)
    assert '"x": 1.5' in fs_text
