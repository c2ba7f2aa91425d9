"""pipeline.outputs: a driver-side job's output opened with the job's own config digest (``extra`` folded in),
and its run manifest written with that digest and the job's resolved config."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from froq_ray.config import ExportJob, config_digest, config_from_dict, digest_payload, resolved_dict
from froq_ray.pipeline.export import OUTPUT
from froq_ray.pipeline.outputs import open_job_output, write_job_manifest
from froq_ray.storage.run_state import OutputStateError

LISTING = pd.DataFrame({"path": ["/faces/a/1.jpg", "/faces/b/1.jpg"], "identity": ["a", None]})


def export_job(tmp_path: Path, mode: str = "resume") -> ExportJob:
    return config_from_dict(
        {
            "job": "export",
            "export": {"keep_list": str(tmp_path / "filter" / "keep_list.parquet"), "shard_size": 5},
            "output": {"uri": str(tmp_path / "out"), "mode": mode},
        }
    )


def open_it(job: ExportJob, rows: int, force: bool = False):
    return open_job_output(
        job,
        OUTPUT,
        extra={"keep_list_rows": rows},
        force=force,
        input_digest="d" * 64,
        inputs=[job.export.keep_list],
        listing=LISTING,
    )


def test_the_output_records_the_digest_of_the_config_with_extra(tmp_path: Path):
    job = export_job(tmp_path)
    state = open_it(job, 3)
    record = json.loads((tmp_path / "out" / "_froq" / "run.json").read_text())
    expected = config_digest(job, extra={"keep_list_rows": 3})
    assert expected != config_digest(job)
    assert record["config_digest"] == state.run_info["config_digest"] == expected
    assert record["config"] == digest_payload(job, extra={"keep_list_rows": 3})
    assert record["config"]["_extra"] == {"keep_list_rows": 3}
    assert record["input_digest"] == "d" * 64 and record["inputs"] == 2
    resumed = open_it(job, 3)  # the same config and extra: resumed, the record read back
    assert resumed.resumed and not resumed.forced
    assert resumed.run_info["config_digest"] == expected
    with pytest.raises(OutputStateError, match="keep_list_rows"):
        open_it(job, 4)  # another extra is another config
    assert open_it(job, 4, force=True).forced


def test_the_manifest_header_is_the_jobs(tmp_path: Path):
    job = export_job(tmp_path)
    state = open_it(job, 3)
    written = write_job_manifest(
        job,
        state,
        started_at="2026-01-02T03:04:05Z",
        counts_by_status={"exported": 2, "not_kept": 1},
        stage_seconds={"prepare": 0.12345, "export": 2},
        results={"written": 2, "skipped": []},
    )
    on_disk = json.loads((tmp_path / "out" / "_froq" / "manifest.json").read_text())
    assert on_disk == written
    assert written["job"] == "export"
    assert written["started_at"] == "2026-01-02T03:04:05Z"
    assert written["config"] == resolved_dict(job)
    assert written["config_digest"] == config_digest(job, extra={"keep_list_rows": 3})
    assert written["counts_by_status"] == {"exported": 2, "not_kept": 1}
    assert written["stage_seconds"] == {"prepare": 0.123, "export": 2.0}
    assert written["results"] == {"written": 2, "skipped": []}
