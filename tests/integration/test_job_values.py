"""What the jobs write equals an independent in-process computation on the same real LFW-dev crops (real
MobileFaceNet, real local Ray cluster): calibrate's per-image pseudo-labels and its layer selection equal the
plain-loop ``calibrate()``; annotate's quality and embedding, applying that calibration, equal ``FroqScorer``.
The crops are decoded here with PIL, not with the pipeline's decode stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from froq_ray import status as st
from froq_ray.config import PerturbationConfig
from froq_ray.models import load_model
from froq_ray.quality.artifact import CalibrationArtifact
from froq_ray.quality.calibration import calibrate, calibration_layers
from froq_ray.quality.observer import network_input
from froq_ray.quality.perturbations import PerturbationSettings, PseudoLabeler
from froq_ray.quality.scorer import FroqScorer
from froq_ray.storage.manifest import HEADER_KEYS, read_manifest
from tests.integration.jobfiles import (
    BAD_FILES,
    FAST_PERTURBATIONS,
    lfw_sample,
    local_inputs,
    read_output,
    run_job,
    write_config,
)

pytestmark = pytest.mark.integration


def job_config(job: str, inputs: Path, out: Path, mobilefacenet_pt: Path, **sections) -> dict:
    cfg = {
        "job": job,
        "input": {"uri": str(inputs), "identity_from_folder": True},
        "model": {"name": "mobilefacenet", "weights": str(mobilefacenet_pt)},
        "scoring": {"perturbation": FAST_PERTURBATIONS},
        "resources": {"ray_batch_size": 4, "model_batch_size": 4},  # several batches, several shards
        "output": {"uri": str(out), "shard_size": 5, "progress_interval_s": 1},
    }
    for name, value in sections.items():
        cfg.setdefault(name, {}).update(value)
    return cfg


@pytest.fixture(scope="module")
def faces(tmp_path_factory, lfw_dev_dir):
    """12 real crops (6 identities x 2) + the 3 bad files in a local folder; the crops' paths, sorted."""
    root = tmp_path_factory.mktemp("values")
    return root, local_inputs(root / "in", lfw_sample(lfw_dev_dir, identities=6, per_identity=2))


@pytest.fixture(scope="module")
def model(mobilefacenet_pt):
    return load_model("mobilefacenet", str(mobilefacenet_pt))


@pytest.fixture(scope="module")
def crops(faces) -> np.ndarray:
    """(12, 112, 112, 3) uint8, decoded with PIL, in path order."""
    array = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in faces[1]])
    assert array.shape == (12, 112, 112, 3)
    return array


@pytest.fixture(scope="module")
def calibrated(ray_cluster, faces, mobilefacenet_pt) -> tuple[Path, Path]:  # noqa: ARG001 - requested for its side effect: the Ray cluster
    """The calibrate job's output folder and the artifact it wrote (as its manifest names it)."""
    root, _ = faces
    cfg = job_config("calibrate", root / "in", root / "cal", mobilefacenet_pt)
    assert run_job("calibrate", write_config(root, "cal", cfg)) == 0
    return root / "cal", Path(read_manifest(str(root / "cal"))["results"]["calibration"]["artifact"])


def ok_rows_by_path(out: pd.DataFrame, paths: list[str]) -> pd.DataFrame:
    """The output's rows in path order, checked to be exactly the crops (ok) and the bad files (not ok)."""
    out = out.sort_values("path", kind="mergesort").reset_index(drop=True)
    assert out["path"].is_unique and len(out) == len(paths) + len(BAD_FILES)
    ok = out[out["status"] == st.OK]
    assert list(ok["path"]) == paths
    bad = out[out["status"] != st.OK]
    assert sorted(bad["status"]) == sorted(BAD_FILES.values())
    return ok


def test_calibrate_job_equals_the_plain_loop(calibrated, faces, model, crops):
    _, paths = faces
    settings = PerturbationSettings.from_dict(PerturbationConfig(**FAST_PERTURBATIONS).model_dump())
    layers, _ = calibration_layers(model)
    expected = calibrate(
        model, [crops[:5], crops[5:]], settings, top_n=10, layer_names=layers, image_ids=paths
    )
    out, artifact = calibrated
    got = CalibrationArtifact.from_json(artifact.read_text(), source=str(artifact))

    assert got.selected_layers == expected.selected_layers and len(got.selected_layers) >= 1
    assert got.top_layers == expected.top_layers
    assert [name for name, _ in got.greedy_curve] == [name for name, _ in expected.greedy_curve]
    np.testing.assert_allclose(
        [r for _, r in got.greedy_curve], [r for _, r in expected.greedy_curve], rtol=1e-6
    )
    assert set(got.utilities) == set(expected.utilities) == set(layers)
    np.testing.assert_allclose(
        [got.utilities[n] for n in layers], [expected.utilities[n] for n in layers], rtol=1e-6, equal_nan=True
    )
    assert got.calibration_set == expected.calibration_set  # the same 12 images, by path
    assert got.settings == json.loads(json.dumps(expected.settings))
    assert got.model == expected.model

    # the per-image pseudo-labels the job wrote, against the labeler run here on the plain network
    labeler = PseudoLabeler(model.network, model.contract, settings, torch.device("cpu"))
    with torch.inference_mode():
        labels = labeler(network_input(crops, model.input_transform(), torch.device("cpu")))
    ok = ok_rows_by_path(read_output(str(out)), paths)
    for column in ("pl_flip", "pl_noise", "pl_occlusion", "pseudo_label"):
        np.testing.assert_allclose(ok[column].to_numpy(np.float32), labels[column], rtol=1e-5, err_msg=column)


def test_annotate_job_equals_froq_scorer(calibrated, faces, model, crops, mobilefacenet_pt):
    root, paths = faces
    _, artifact = calibrated
    cfg = job_config(
        "annotate", root / "in", root / "ann", mobilefacenet_pt, calibration={"artifact": str(artifact)}
    )
    assert run_job("annotate", write_config(root, "ann", cfg)) == 0
    ok = ok_rows_by_path(read_output(str(root / "ann")), paths)
    for job, folder in (("calibrate", "cal"), ("annotate", "ann")):  # the header every job writes
        manifest = read_manifest(str(root / folder))
        assert set(manifest) == {*HEADER_KEYS, "results"} and manifest["job"] == job
        assert sum(manifest["counts_by_status"].values()) == len(paths) + len(BAD_FILES)
        assert set(manifest["stage_seconds"]) == {"list", "read", "decode", "score", "write"}

    calibration = CalibrationArtifact.from_json(artifact.read_text(), source=str(artifact))
    expected = FroqScorer(model, calibration).score(crops)  # one batch, NCHW: the plain way
    quality = ok["quality"].to_numpy()
    assert quality.dtype == np.float32
    np.testing.assert_allclose(quality, expected.quality, rtol=1e-5)
    embedding = np.stack(ok["embedding"].to_numpy())
    assert embedding.shape == (12, model.embedding_size) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, expected.embedding, rtol=1e-5, atol=1e-4)
    assert (ok["calibration_id"] == calibration.calibration_id).all()
    # the CPU actor ran the frozen observed graph (scoring.graph: auto), within the tolerances above
    scoring = read_manifest(str(root / "ann"))["results"]["scoring"]
    assert (scoring["graph_requested"], scoring["graph"], scoring["graph_used"]) == (
        "auto",
        "frozen",
        ["frozen"],
    )
