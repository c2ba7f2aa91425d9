"""calibrate -> annotate -> evaluate over s3:// in and out (local moto S3 server, real local Ray cluster),
with corrupt, empty and non-image objects mixed into real LFW-dev faces."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from froq_ray import status as st
from froq_ray.storage.schema import SCHEMA_VERSION
from tests.integration.jobfiles import (
    BAD_FILES,
    FAST_PERTURBATIONS,
    SMALL_RESOURCES,
    identity_of,
    lfw_sample,
    put_inputs,
    read_json_uri,
    read_output,
    run_job,
    write_config,
)

pytestmark = pytest.mark.integration


def s3_config(job: str, s3, mobilefacenet_pt, input_uri: str, output_uri: str, **sections) -> dict:
    cfg = {
        "job": job,
        "input": {"uri": input_uri, "identity_from_folder": True, "storage_options": s3.storage_options},
        "model": {"name": "mobilefacenet", "weights": str(mobilefacenet_pt)},
        "scoring": {"perturbation": FAST_PERTURBATIONS},
        "resources": {k: v for k, v in SMALL_RESOURCES.items() if k != "progress_interval_s"},
        "output": {
            "uri": output_uri,
            "shard_size": 8,
            "storage_options": s3.storage_options,
            "progress_interval_s": 1,
        },
    }
    for name, value in sections.items():
        cfg.setdefault(name, {}).update(value)
    return cfg


@pytest.mark.timeout(600)  # three jobs in a row, over the local S3 server
@pytest.mark.usefixtures("ray_cluster")
def test_calibrate_annotate_evaluate_over_s3(s3, lfw_dev_dir, mobilefacenet_pt, tmp_path):
    fs = s3.filesystem()
    images = lfw_sample(lfw_dev_dir, identities=8, per_identity=2)
    n_inputs = put_inputs(lambda rel, data: fs.pipe(f"{s3.bucket}/in/{rel}", data), images)

    cal = s3_config("calibrate", s3, mobilefacenet_pt, s3.uri("in"), s3.uri("cal"))
    assert run_job("calibrate", write_config(tmp_path, "cal", cal)) == 0
    cal_manifest = read_json_uri(s3.uri("cal", "_froq/manifest.json"), s3.storage_options)
    assert cal_manifest["counts_by_status"] == {
        st.OK: len(images),
        "corrupt": 1,
        "empty": 1,
        "not_an_image": 1,
    }
    artifact = read_json_uri(s3.uri("cal", "_froq/calibration.json"), s3.storage_options)
    assert artifact["selected_layers"] and artifact["calibration_set"]["size"] == len(images)
    assert artifact["model"]["weights_sha256"] == cal_manifest["results"]["model"]["weights_sha256"]
    per_image = read_output(s3.uri("cal"), s3.storage_options)
    assert len(per_image) == n_inputs
    ok = per_image[per_image["status"] == st.OK]
    assert ok[["pl_flip", "pl_noise", "pl_occlusion", "pseudo_label"]].notna().all().all()
    np.testing.assert_allclose(
        ok["pseudo_label"], ok[["pl_flip", "pl_noise", "pl_occlusion"]].mean(axis=1), rtol=1e-5
    )

    ann = s3_config(
        "annotate",
        s3,
        mobilefacenet_pt,
        s3.uri("in"),
        s3.uri("ann"),
        calibration={"artifact": s3.uri("cal", "_froq/calibration.json")},
    )
    assert run_job("annotate", write_config(tmp_path, "ann", ann)) == 0
    out = read_output(s3.uri("ann"), s3.storage_options)
    assert len(out) == n_inputs and out["path"].is_unique
    bad = out[out["path"].str.contains("Bad_Inputs")]
    assert {p.rsplit("/", 1)[-1]: s for p, s in zip(bad["path"], bad["status"], strict=True)} == {
        name.split("/")[1]: status for name, status in BAD_FILES.items()
    }
    assert bad["error"].str.len().min() > 0 and bad["quality"].isna().all() and bad["embedding"].isna().all()
    good = out[out["status"] == st.OK]
    assert len(good) == len(images) and np.isfinite(good["quality"]).all() and (good["quality"] > 0).all()
    assert all(e.dtype == np.float32 and e.shape == (128,) for e in good["embedding"])
    assert (good["calibration_id"] == artifact["calibration_id"]).all()
    assert list(good["identity"]) == [identity_of(p) for p in good["path"]]
    part = next(p for p in fs.ls(f"{s3.bucket}/ann") if p.endswith("part-00000.parquet"))
    meta = pq.read_schema(fs.open(part, "rb")).metadata
    assert meta[b"froq_ray.schema_version"] == SCHEMA_VERSION.encode()
    assert meta[b"froq_ray.calibration_id"] == artifact["calibration_id"].encode()
    ann_manifest = read_json_uri(s3.uri("ann", "_froq/manifest.json"), s3.storage_options)
    assert ann_manifest["counts_by_status"][st.OK] == len(images)
    assert "secret" not in str(ann_manifest) or "'secret': '***'" in str(ann_manifest)
    assert s3.storage_options["secret"] not in str(ann_manifest["config"])

    ev = {
        "job": "evaluate",
        "evaluate": {
            "annotations": s3.uri("ann"),
            "identity_source": "column",
            "storage_options": s3.storage_options,
        },
        "output": {"uri": s3.uri("eval"), "storage_options": s3.storage_options},
    }
    assert run_job("evaluate", write_config(tmp_path, "ev", ev)) == 0
    report = read_json_uri(s3.uri("eval", "_froq/manifest.json"), s3.storage_options)
    assert report["results"]["images"] == len(images) and report["results"]["rows_not_ok"] == len(BAD_FILES)
    assert report["results"]["edc"][0]["n_genuine"] == 8  # 8 identities x 1 pair
    assert fs.info(f"{s3.bucket}/eval/edc.png")["size"] > 1000
