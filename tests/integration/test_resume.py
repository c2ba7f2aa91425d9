"""Resume after an interrupted run (the driver killed mid-run), refusal under a changed config, and a
re-run of a finished job that changes nothing. Input and output on the local S3 server."""

from __future__ import annotations

import pytest

from froq_ray import status as st
from froq_ray.storage.manifest import read_manifest
from froq_ray.storage.shards import read_markers
from tests.integration.jobfiles import (
    kill_driver_when,
    lfw_sample,
    put_inputs,
    read_output,
    run_job,
    write_config,
)

pytestmark = pytest.mark.integration

SHARD_SIZE = 2
KILL_AFTER_ROWS = 2  # the driver is killed once a completed shard holds this many rows


def done_shards(fs, out: str) -> dict[int, tuple[dict, str]]:
    """Completed shards of the output: index -> (completion marker, ETag of the shard's Parquet part)."""
    markers = read_markers(fs, out)
    return {i: (marker, fs.info(f"{out}/{marker['file']}")["ETag"]) for i, marker in markers.items()}


def rows_done(fs, out: str) -> int:
    try:  # the job's write probe can make the prefix exist for an instant and vanish again
        return sum(marker["rows"] for marker in read_markers(fs, out).values())
    except FileNotFoundError:
        return 0


def every_object(fs, out: str) -> dict[str, str]:
    """Every object under the output prefix (bookkeeping files wherever they live) -> its ETag."""
    fs.invalidate_cache(out)
    return {path: info["ETag"] for path, info in fs.find(out, detail=True).items()}


def pseudo_label_config(s3, mobilefacenet_pt, ray_address: str, seed: int = 0) -> dict:
    # pseudo_label mode with the reference's 76 passes per image: slow enough to interrupt between shards
    return {
        "job": "annotate",
        "input": {"uri": s3.uri("in"), "identity_from_folder": True, "storage_options": s3.storage_options},
        "model": {"name": "mobilefacenet", "weights": str(mobilefacenet_pt)},
        "scoring": {"mode": "pseudo_label", "perturbation": {"noise_seed": seed}},
        "resources": {"ray_address": ray_address, "ray_batch_size": SHARD_SIZE, "model_batch_size": 256},
        "output": {
            "uri": s3.uri("out"),
            "shard_size": SHARD_SIZE,
            "storage_options": s3.storage_options,
            "progress_interval_s": 1,
        },
    }


@pytest.mark.timeout(900)  # ~70 s here; the kill waits up to 600 s for its row count, then two more runs
def test_interrupted_run_resumes_to_exactly_one_row_per_input(
    ray_cluster, s3, lfw_dev_dir, mobilefacenet_pt, tmp_path, capsys
):
    fs = s3.filesystem()
    out = f"{s3.bucket}/out"
    n_inputs = put_inputs(
        lambda rel, data: fs.pipe(f"{s3.bucket}/in/{rel}", data),
        lfw_sample(lfw_dev_dir, identities=10, per_identity=2),
    )
    n_shards = -(-n_inputs // SHARD_SIZE)
    address = ray_cluster.get_runtime_context().gcs_address
    config = write_config(tmp_path, "pl", pseudo_label_config(s3, mobilefacenet_pt, address))

    # the driver is killed once KILL_AFTER_ROWS rows are complete (a row count, not a time); the 600 s
    # deadline only bounds a run that never gets there
    kill_driver_when(
        "annotate", config, lambda: rows_done(fs, out) >= KILL_AFTER_ROWS, timeout_s=600, poll_s=0.05
    )
    before = done_shards(fs, out)
    done = sum(marker["rows"] for marker, _ in before.values())
    assert KILL_AFTER_ROWS <= done < n_inputs and 1 <= len(before) < n_shards, (
        f"the run was not killed mid-way ({done}/{n_inputs} rows, {len(before)}/{n_shards} shards)"
    )

    assert run_job("annotate", config) == 0
    after = done_shards(fs, out)
    assert sorted(after) == list(range(n_shards))
    assert all(after[i] == marker_and_part for i, marker_and_part in before.items()), (
        "completed shards were rewritten"
    )
    table = read_output(s3.uri("out"), s3.storage_options)
    assert len(table) == n_inputs and table["path"].is_unique
    listed = sorted(p.removeprefix(f"{s3.bucket}/") for p in fs.find(f"{s3.bucket}/in"))
    assert sorted(p.removeprefix(f"s3://{s3.bucket}/") for p in table["path"]) == listed
    ok = table[table["status"] == st.OK]
    assert ok["pseudo_label"].notna().all() and (ok["quality"] == ok["pseudo_label"]).all()
    manifest = read_manifest(s3.uri("out"), s3.storage_options)
    assert manifest["results"]["resumed"]
    assert manifest["results"]["shards"]["resumed_from_earlier_runs"] == len(before)
    assert sum(manifest["counts_by_status"].values()) == n_inputs

    # a finished job re-run: nothing changes, and it says so
    finished = every_object(fs, out)
    capsys.readouterr()
    assert run_job("annotate", config) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert every_object(fs, out) == finished

    # a changed config refuses to resume into the same output
    changed = write_config(tmp_path, "pl2", pseudo_label_config(s3, mobilefacenet_pt, address, seed=1))
    assert run_job("annotate", changed) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert every_object(fs, out) == finished
