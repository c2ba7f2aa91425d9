"""froq distill on a real local Ray cluster: annotate a few LFW-dev faces (MobileFaceNet FROQ), add teacher-labelled
degraded copies, train a tiny student on Ray Train, write the artifact; a run whose driver is killed after its first
epoch resumes to the same weights; the split never leaks; config and input errors name what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from safetensors.torch import load_file

from froq_ray import status as st
from froq_ray.distill import load_student_artifact
from froq_ray.engine.train import RUN_NAME, SNAPSHOT_FILE, latest_checkpoint_epoch
from froq_ray.imaging.decode import decode_batch
from froq_ray.imaging.degrade import Degradation, apply_degradation
from froq_ray.storage.schema import annotation_schema, to_table
from tests.integration.jobfiles import kill_driver_when, lfw_sample, local_inputs, run_job, write_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CALIBRATION = REPO / "docs" / "results" / "mobilefacenet-lfw-folds123-sample300.calibration.json"
IDENTITIES, PER_IDENTITY = 50, 2
SMALL = {"ray_batch_size": 32, "model_batch_size": 32}


def teacher_sections(mobilefacenet_pt) -> dict:
    return {
        "model": {"name": "mobilefacenet", "weights": str(mobilefacenet_pt)},
        "calibration": {"artifact": str(CALIBRATION)},
    }


@pytest.fixture(scope="module")
def annotated(ray_cluster, lfw_dev_dir, mobilefacenet_pt, tmp_path_factory):  # noqa: ARG001 - requested for its side effect: the local Ray cluster
    """An annotate output over 100 LFW-dev faces + 3 bad files, and a second annotation file with one ok row
    whose image is missing (it fails to read in training) and one without a quality."""
    root = tmp_path_factory.mktemp("distill")
    images = root / "images"
    local_inputs(images, lfw_sample(lfw_dev_dir, identities=IDENTITIES, per_identity=PER_IDENTITY))
    cfg = {
        "job": "annotate",
        "input": {"uri": str(images), "identity_from_folder": True},
        **teacher_sections(mobilefacenet_pt),
        "scoring": {"write_embedding": False, "quality_only": True},
        "resources": SMALL,
        "output": {"uri": str(root / "ann"), "progress_interval_s": 5},
    }
    assert run_job("annotate", write_config(root, "ann", cfg)) == 0
    ann = pd.read_parquet(root / "ann")
    model_id, calibration_id = ann["model_id"].iloc[0], ann["calibration_id"].iloc[0]
    extra = {
        "path": [str(images / "Missing_Person" / "gone.jpg"), str(images / "No_Quality" / "x.jpg")],
        "identity": ["Missing_Person", "No_Quality"],
        "status": [st.OK, st.OK],
        "error": [None, None],
        "quality": [30.0, np.nan],
        "width": [250, 250],
        "height": [250, 250],
        "model_id": [model_id] * 2,
        "calibration_id": [calibration_id] * 2,
    }
    pq.write_table(to_table(extra, annotation_schema(None)), root / "extra.parquet")
    return root, ann


def distill_config(root: Path, mobilefacenet_pt, out: str, **sections) -> dict:
    cfg = {
        "job": "distill",
        "distill": {
            "annotations": [str(root / "ann"), str(root / "extra.parquet")],
            "target_column": "quality",
            "validation_fraction": 0.25,
            "split_seed": 3,
        },
        "student": {"arch": "tiny_cnn", "input_size": 64, "options": {"width": 8}},
        "self_training": {"enabled": True, "copies": 1, "fraction": 0.08, "seed": 5},
        "training": {"epochs": 2, "batch_size": 16, "lr": 0.003, "seed": 7},
        **teacher_sections(mobilefacenet_pt),
        "resources": SMALL,
        "output": {"uri": str(root / out), "shard_size": 4, "progress_interval_s": 5},
    }
    for name, value in sections.items():
        cfg[name] = {**cfg.get(name, {}), **value}
    return cfg


def snapshot_exists(out: Path) -> bool:
    return (out / "_train" / RUN_NAME / SNAPSHOT_FILE).is_file()


@pytest.mark.timeout(1800)  # the module fixture annotates 100 faces; three distill runs follow
def test_distill_with_self_training_writes_an_artifact_and_resumes_after_a_kill(
    annotated, mobilefacenet_pt, capsys
):
    root, ann = annotated
    n_ok = int((ann["status"] == st.OK).sum())
    assert n_ok == IDENTITIES * PER_IDENTITY

    # an interrupted run: its driver (joined to the test cluster) is killed once epoch 0's checkpoint is recorded.
    # It decodes the crops every epoch (streaming); the uninterrupted run below decodes them once (cache_decoded:
    # auto caches this small set): the final weights must not depend on either.
    address = __import__("ray").get_runtime_context().gcs_address
    killed_cfg = distill_config(
        root,
        mobilefacenet_pt,
        "killed",
        resources={"ray_address": address},
        training={"cache_decoded": False},
    )
    config = write_config(root, "killed", killed_cfg)
    kill_driver_when("distill", config, lambda: snapshot_exists(root / "killed"), timeout_s=300, poll_s=0.1)
    assert latest_checkpoint_epoch(str(root / "killed" / "_train"), None) == 0, "not killed after epoch 0"
    assert not (root / "killed" / "card.json").exists()

    # the same config, uninterrupted
    capsys.readouterr()
    assert run_job("distill", write_config(root, "full", distill_config(root, mobilefacenet_pt, "full"))) == 0
    assert "validation crops once" in capsys.readouterr().out
    out = root / "full"
    manifest = json.loads((out / "_froq" / "manifest.json").read_text())
    counts = manifest["results"]["counts_by_status"]
    # annotation rows: 100 faces + the missing image are usable; 3 bad files and one row without quality are not
    assert manifest["counts_by_status"] == {
        st.OK: n_ok + 1,
        "corrupt": 1,
        "empty": 1,
        "not_an_image": 1,
        "target_not_finite": 1,
    }
    failed = counts["training_read_failures_last_epoch"]
    assert failed["train"] + failed["validation"] == 1  # the missing image, counted (not silently dropped)

    # self-training: 8 copies of 8% of the usable rows, labelled by the teacher, replayable from their record
    copies = pd.read_parquet(out / "self_training")
    assert len(copies) == round(0.08 * (n_ok + 1)) == sum(counts["self_training"].values())
    good = copies[copies["status"] == st.OK]
    assert len(good) >= len(copies) - 1 and np.isfinite(good["quality"]).all()
    assert set(good["model_id"]) == set(ann["model_id"]) and set(good["calibration_id"]) == set(
        ann["calibration_id"]
    )
    assert all(p.startswith(str(out / "self_training" / "_images")) for p in copies["path"])
    for row in good.itertuples():
        source = decode_batch([Path(row.source_path).read_bytes()], 112).pixels[0]
        for step in json.loads(row.degradation):
            source = apply_degradation(source, Degradation(step["kind"], step["params"]))
        assert np.array_equal(np.asarray(Image.open(row.path).convert("RGB")), source)

    # the split: every key on one side only; copies follow their source image's identity
    split = pd.read_parquet(out / "split.parquet")
    assert list(split.columns) == ["path", "split_key", "side", "target", "source_path", "identity"]
    assert split.groupby("split_key")["side"].nunique().max() == 1
    assert len(split) == n_ok + 1 + len(good)
    by_path = split.set_index("path")
    for row in good.itertuples():
        assert by_path.loc[row.path, "side"] == by_path.loc[row.source_path, "side"]
        assert by_path.loc[row.path, "split_key"] == row.identity
    assert (split["side"] == "validation").sum() > 0 and (split["side"] == "train").sum() > 0

    # the artifact and its card
    student = load_student_artifact(str(out))
    card = student.card
    assert manifest["results"]["student_id"] == student.student_id
    assert card["target"]["column"] == "quality" and card["input_size"] == 64 and card["arch"] == "tiny_cnn"
    assert card["teacher"]["model_id"] == ann["model_id"].iloc[0] and card["teacher"]["verified"]
    assert card["teacher"]["calibration_id"] == ann["calibration_id"].iloc[0]
    assert len(card["teacher"]["weights_sha256"]) == 64
    data = card["data"]
    assert (
        data["train_rows"] + data["validation_rows"] == len(split) and len(data["training_data_digest"]) == 64
    )
    assert data["split"]["train_keys"] + data["split"]["validation_keys"] == split["split_key"].nunique()
    assert card["training"]["epochs_completed"] == 2 and card["training"]["seed"] == 7
    assert card["training"]["loss"] == {"regression": "mse", "rank": "pairwise", "rank_weight": 1.0}
    assert card["training"]["resumed_from_epoch"] is None and len(card["history"]) == 2
    assert set(card["validation"]) >= {"spearman", "pearson", "mse", "rows"}
    assert card["params"] > 0 and card["flops"] > 0 and card["versions"]["ray"]
    crops = decode_batch([Path(p).read_bytes() for p in ann["path"][ann["status"] == st.OK][:4]], 112).pixels
    import torch

    with torch.no_grad():
        predicted = student.network(student.input_transform()(torch.from_numpy(crops)))
    assert predicted.shape == (4,) and torch.isfinite(predicted).all()

    # resume the killed run: it continues after epoch 0 and ends with exactly the uninterrupted weights
    assert run_job("distill", config) == 0
    assert "training crops are decoded every epoch (cache_decoded=False" in capsys.readouterr().out
    resumed = json.loads((root / "killed" / "card.json").read_text())
    assert resumed["training"]["resumed_from_epoch"] == 0
    a, b = load_file(out / "weights.safetensors"), load_file(root / "killed" / "weights.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert resumed["weights"]["sha256"] == card["weights"]["sha256"]
    assert resumed["history"] == card["history"]

    # a finished run re-run does nothing
    capsys.readouterr()
    assert run_job("distill", config) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.timeout(900)  # run alone, it sets up the module fixture (an annotation of 100 faces)
def test_config_and_input_errors_name_what_to_fix(annotated, mobilefacenet_pt, capsys):
    root, _ = annotated

    def error_of(name: str, cfg: dict, *extra: str) -> str:
        capsys.readouterr()
        assert run_job("distill", write_config(root, name, cfg), *extra) == 2
        return capsys.readouterr().err

    base = distill_config(root, mobilefacenet_pt, "errors")
    assert "training.epoch: unknown key (did you mean 'epochs'?)" in error_of(
        "e1", {**base, "training": {"epoch": 1}}
    )
    err = error_of("e2", {**base, "distill": {**base["distill"], "target_column": "cr"}})
    assert "self_training.enabled: the teacher cannot label degraded copies with 'cr'" in err
    err = error_of(
        "e3",
        {
            **base,
            "distill": {**base["distill"], "target_column": "sharpness"},
            "self_training": {"enabled": False},
        },
    )
    assert "no column(s) ['sharpness']" in err
    err = error_of(
        "e4", {**base, "model": {"name": "dlib_resnet_v1"}, "calibration": {"artifact": "builtin"}}
    )
    assert "the annotations were made by mobilefacenet@" in err and "dlib_resnet_v1@" in err
    (root / "taken").mkdir()
    (root / "taken" / "split.parquet").write_bytes(b"x")
    err = error_of("e5", distill_config(root, mobilefacenet_pt, "taken", output={"mode": "error_if_exists"}))
    # no distill run recorded there: a split.parquet froq did not write is refused in every mode
    assert "taken holds split.parquet, which distill would write or delete, but no _froq/run.json" in err
