"""One manifest header: every job's ``_froq/manifest.json`` starts with the same keys (``HEADER_KEYS``), built by
``storage.manifest.RunManifest`` and written by ``write_manifest``; the job's own part is under ``results``.

evaluate, filter and export run end to end here (no Ray); annotate and calibrate build theirs with the runner's
``scoring_manifest`` and distill with ``distill_manifest`` (the functions the jobs call) from a finished run's
values; the integration tests check the manifests those jobs write on a Ray cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from froq_ray import __version__
from froq_ray.config import config_from_dict, resolved_dict
from froq_ray.engine.runner import RunResult, scoring_manifest
from froq_ray.engine.train import TrainedStudent
from froq_ray.pipeline.distill import TrainingData, distill_manifest
from froq_ray.pipeline.distill_inputs import AnnotationRows
from froq_ray.pipeline.evaluate import run_evaluate
from froq_ray.pipeline.export import run_export
from froq_ray.pipeline.filter import run_filter
from froq_ray.pipeline.review import run_review
from froq_ray.storage.annotations import KEEP_LIST
from froq_ray.storage.location import Location
from froq_ray.storage.manifest import HEADER_KEYS, read_manifest, write_manifest
from froq_ray.versions import software_versions
from tests import review_data
from tests.tiny_models import tiny_fr_model
from tests.unit.pipeline import test_evaluate_job as evaluate_case
from tests.unit.pipeline import test_filter_job as filter_case

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SECRET = {"key": "AKIA-not-real", "secret": "s3cr3t-value", "endpoint_url": "http://localhost:1"}


def scoring_job_manifest(tmp_path: Path, job: str) -> dict:
    cfg = config_from_dict(
        {
            "job": job,
            "input": {"uri": str(tmp_path / "in"), "storage_options": SECRET},
            "model": {"name": "mobilefacenet", "weights": str(tmp_path / "w.pt")},
            "output": {"uri": str(tmp_path / job)},
        }
    )
    model = tiny_fr_model()
    prepared = SimpleNamespace(
        cfg=cfg,
        model=model,
        config_digest="c" * 64,
        started_at="2026-01-01T00:00:00Z",
        inputs=SimpleNamespace(total_rows=5, summary={"source": "folder"}),
        input_digest="i" * 64,
        shards=[0, 1],
        pending=[1],
        state=SimpleNamespace(resumed=True, forced=False),
    )
    result = RunResult({"ok": 2}, 2, 1, 0.5, np.empty(0), {"list": 0.0, "read": 0.25, "score": 1.0})
    manifest = scoring_manifest(prepared, result, {"corrupt": 1, "ok": 4})
    assert manifest.results["shards"] == {"total": 2, "written_this_run": 1, "resumed_from_earlier_runs": 1}
    assert manifest.results["this_run"]["images_per_second"] == 4.0
    return write_manifest(Location(str(tmp_path / job)), manifest)


def distill_job_manifest(tmp_path: Path) -> dict:
    cfg = config_from_dict(
        {
            "job": "distill",
            "distill": {"annotations": "a", "storage_options": SECRET},
            "output": {"uri": str(tmp_path / "distill")},
        }
    )
    table = pd.DataFrame({"path": ["/a.jpg", "/b.jpg"], "identity": ["a", "b"], "target": [1.0, 2.0]})
    rows = AnnotationRows(table, ["/ann/part-00000.parquet"], 4, {"corrupt": 1, "target_not_finite": 1})
    split = table.assign(side=["train", "validation"])
    card = {"arch": "tiny_cnn", "weights": {"sha256": "f" * 64}, "params": 10, "flops": 20, "validation": {}}
    trained = TrainedStudent({}, [{"train_rows_failed_decode": 1}], 0, 3, "/ckpt", None)
    manifest = distill_manifest(
        cfg,
        "c" * 64,
        TrainingData(split, rows, None, None),
        card,
        trained=trained,
        started_at="2026-01-01T00:00:00Z",
        stage_seconds={"train": 2},
    )
    assert manifest.results["counts_by_status"]["training_read_failures_last_epoch"]["train"] == 1
    return write_manifest(Location(str(tmp_path / "distill")), manifest)


def evaluate_job_manifest(tmp_path: Path) -> dict:
    evaluate_case.write_annotations(tmp_path / "ann", evaluate_case.labelled())
    cfg = config_from_dict(
        {
            "job": "evaluate",
            "evaluate": {"annotations": str(tmp_path / "ann"), "storage_options": SECRET},
            "output": {"uri": str(tmp_path / "ev")},
        }
    )
    returned = run_evaluate(cfg)
    assert returned["results"]["images"] == 16 and returned["results"]["edc"][0]["method"] == "quality"
    return returned


def filter_job_manifest(tmp_path: Path) -> dict:
    filter_case.write_annotations(tmp_path / "ann", filter_case.annotation_rows())
    job = filter_case.job(tmp_path / "ann", tmp_path / "out", "resume", min_identity_images=2)
    job = job.model_copy(update={"filter": job.filter.model_copy(update={"storage_options": SECRET})})
    summary = run_filter(job)
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest["results"]["summary"] == summary
    assert manifest["counts_by_status"] == {"corrupt": 1, "ok": 9}
    return manifest


def export_job_manifest(tmp_path: Path) -> dict:
    """4 small JPEGs of 2 identities, a keep-list keeping 3 of them, one of those missing at export time."""
    paths = []
    for k, identity in enumerate(["a", "a", "b", "b"]):
        (tmp_path / "src" / identity).mkdir(parents=True, exist_ok=True)
        path = tmp_path / "src" / identity / f"{k}.jpg"
        Image.new("RGB", (8, 8), (60 * k, 0, 0)).save(path)
        paths.append(str(path))
    (tmp_path / "filter").mkdir()
    keep_list = pa.table({"path": paths, "identity": ["a", "a", "b", "b"], "keep": [True, True, True, False]})
    pq.write_table(keep_list, tmp_path / "filter" / KEEP_LIST)
    Path(paths[1]).unlink()
    cfg = config_from_dict(
        {
            "job": "export",
            "export": {"keep_list": str(tmp_path / "filter"), "format": "parquet", "storage_options": SECRET},
            "output": {"uri": str(tmp_path / "export")},
        }
    )
    returned = run_export(cfg)
    assert returned["counts_by_status"] == {"exported": 2, "missing": 1, "not_kept": 1}
    assert returned["results"]["written"] == 2 and returned["results"]["skipped"]["paths"] == [paths[1]]
    assert pd.read_parquet(tmp_path / "export").path.tolist() == [paths[0], paths[2]]
    return returned


def review_job_manifest(tmp_path: Path) -> dict:
    """The review job on the review tests' small annotated tree (one of its files is not an image)."""
    review_data.write_images(tmp_path / "images")
    review_data.write_annotations(review_data.annotation_frame(tmp_path / "images"), tmp_path / "ann")
    run_review(review_data.review_job(str(tmp_path / "ann"), str(tmp_path / "out")))
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest["results"]["skipped"]["by_status"] == {"not_an_image": 1}
    return manifest


BUILDERS = {
    "annotate": lambda tmp: scoring_job_manifest(tmp, "annotate"),
    "calibrate": lambda tmp: scoring_job_manifest(tmp, "calibrate"),
    "distill": distill_job_manifest,
    "evaluate": evaluate_job_manifest,
    "filter": filter_job_manifest,
    "export": export_job_manifest,
    "review": review_job_manifest,
}


@pytest.mark.parametrize("job", sorted(BUILDERS))
def test_every_job_manifest_has_the_same_header(job, tmp_path, capsys, request):
    if job == "export":
        request.getfixturevalue("ray_cluster")  # its shards are written by Ray tasks: on the test cluster
    written = BUILDERS[job](tmp_path)
    out = {
        "annotate": "annotate",
        "calibrate": "calibrate",
        "distill": "distill",
        "evaluate": "ev",
        "export": "export",
    }.get(job, "out")
    on_disk = json.loads((tmp_path / out / "_froq" / "manifest.json").read_text())
    assert on_disk == written
    assert set(on_disk) == {*HEADER_KEYS, "results"}
    assert on_disk["job"] == job
    assert STAMP.match(on_disk["started_at"]) and STAMP.match(on_disk["finished_at"])
    assert on_disk["started_at"] <= on_disk["finished_at"]
    assert re.fullmatch(r"[0-9a-f]{64}", on_disk["config_digest"])
    assert on_disk["config"]["job"] == job
    assert on_disk["versions"] == software_versions() and on_disk["versions"]["froq_ray"] == __version__
    assert set(on_disk["versions"]) == {"froq_ray", "python", "torch", "ray", "numpy", "pyarrow", "pandas"}
    counts = on_disk["counts_by_status"]
    assert counts and all(isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in counts.items())
    seconds = on_disk["stage_seconds"]
    assert seconds and all(isinstance(v, float) and v >= 0 for v in seconds.values())
    text = json.dumps(on_disk)
    assert SECRET["secret"] not in text and SECRET["key"] not in text  # credentials never written
    assert isinstance(on_disk["results"], dict) and on_disk["results"]
    capsys.readouterr()


def test_the_resolved_config_is_recorded_redacted(tmp_path):
    written = scoring_job_manifest(tmp_path, "annotate")
    cfg = config_from_dict(
        {
            "job": "annotate",
            "input": {"uri": str(tmp_path / "in"), "storage_options": SECRET},
            "model": {"name": "mobilefacenet", "weights": str(tmp_path / "w.pt")},
            "output": {"uri": str(tmp_path / "annotate")},
        }
    )
    assert written["config"] == resolved_dict(cfg)
    assert written["config"]["input"]["storage_options"]["secret"] == "***"
    assert written["config"]["input"]["storage_options"]["endpoint_url"] == "http://localhost:1"
    assert written["counts_by_status"] == {"corrupt": 1, "ok": 4}
    assert written["stage_seconds"] == {"list": 0.0, "read": 0.25, "score": 1.0}
