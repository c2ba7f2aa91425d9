"""Resume after an interrupted run (the driver killed mid-run), refusal under a changed config, and a
re-run of a finished job that changes nothing. Input and output on the local S3 server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from froq_ray import status as st
from froq_ray.storage.manifest import MANIFEST_FILE
from froq_ray.storage.run_state import RUN_FILE
from tests.integration.jobfiles import (
    env_with_repo_on_path,
    lfw_sample,
    put_inputs,
    read_json_uri,
    read_output,
    run_job,
    write_config,
)

pytestmark = pytest.mark.integration


def markers(fs, prefix: str) -> dict[str, str]:
    state_dir = f"{prefix}/_froq"  # the completion markers' folder
    fs.invalidate_cache(state_dir)
    try:  # the job's write probe can make the prefix exist for an instant and vanish again
        return {p: fs.info(p)["ETag"] for p in fs.ls(state_dir) if p.endswith(".done.json")}
    except FileNotFoundError:
        return {}


def pseudo_label_config(s3, mobilefacenet_pt, ray_address: str, seed: int = 0) -> dict:
    # pseudo_label mode with the reference's 76 passes per image: slow enough to interrupt between shards
    return {
        "job": "annotate",
        "input": {"uri": s3.uri("in"), "identity_from_folder": True, "storage_options": s3.storage_options},
        "model": {"name": "mobilefacenet", "weights": str(mobilefacenet_pt)},
        "scoring": {"mode": "pseudo_label", "perturbation": {"noise_seed": seed}},
        "resources": {"ray_address": ray_address, "ray_batch_size": 4, "model_batch_size": 256},
        "output": {"uri": s3.uri("out"), "shard_size": 4, "storage_options": s3.storage_options,
                   "progress_interval_s": 1},
    }


def test_interrupted_run_resumes_to_exactly_one_row_per_input(ray_cluster, s3, lfw_dev_dir, mobilefacenet_pt,
                                                              tmp_path, capsys):
    fs = s3.filesystem()
    n_inputs = put_inputs(lambda rel, data: fs.pipe(f"{s3.bucket}/in/{rel}", data),
                          lfw_sample(lfw_dev_dir, identities=10, per_identity=2))
    n_shards = -(-n_inputs // 4)
    address = ray_cluster.get_runtime_context().gcs_address
    config = write_config(tmp_path, "pl", pseudo_label_config(s3, mobilefacenet_pt, address))

    cmd = [sys.executable, "-m", "froq_ray.cli", "annotate", "--config", str(config)]
    proc = subprocess.Popen(cmd, env=env_with_repo_on_path(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not markers(fs, f"{s3.bucket}/out") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = markers(fs, f"{s3.bucket}/out")
    assert 1 <= len(before) < n_shards, f"the run was not interrupted mid-way ({len(before)}/{n_shards} shards)"

    assert run_job("annotate", config) == 0
    after = markers(fs, f"{s3.bucket}/out")
    assert len(after) == n_shards
    assert all(after[p] == etag for p, etag in before.items()), "completed shards were rewritten"
    out = read_output(s3.uri("out"), s3.storage_options)
    assert len(out) == n_inputs and out["path"].is_unique
    listed = sorted(p.removeprefix(f"{s3.bucket}/") for p in fs.find(f"{s3.bucket}/in"))
    assert sorted(p.removeprefix(f"s3://{s3.bucket}/") for p in out["path"]) == listed
    ok = out[out["status"] == st.OK]
    assert ok["pseudo_label"].notna().all() and (ok["quality"] == ok["pseudo_label"]).all()
    manifest = read_json_uri(s3.uri("out", MANIFEST_FILE), s3.storage_options)
    assert manifest["resumed"] and manifest["shards"]["resumed_from_earlier_runs"] == len(before)
    assert sum(manifest["counts_by_status"].values()) == n_inputs

    # a finished job re-run: nothing changes, and it says so
    run_file = fs.info(s3.uri("out", RUN_FILE))["ETag"]
    capsys.readouterr()
    assert run_job("annotate", config) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert markers(fs, f"{s3.bucket}/out") == after and fs.info(s3.uri("out", RUN_FILE))["ETag"] == run_file

    # a changed config refuses to resume into the same output
    changed = write_config(tmp_path, "pl2", pseudo_label_config(s3, mobilefacenet_pt, address, seed=1))
    assert run_job("annotate", changed) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert markers(fs, f"{s3.bucket}/out") == after
