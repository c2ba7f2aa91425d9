"""The calibrate job with a labelled target (issue 15) equals the in-process library on the same real LFW-dev
crops (real MobileFaceNet, real local Ray cluster): one forward pass per image and per degraded copy, the
``genuine`` target against the clean images, the linear observer fitted with identity-grouped CV; the artifact
then scores with FroqScorer exactly as its weights say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from froq_ray import status as st
from froq_ray.config import ConfigError, load_config
from froq_ray.curation.calibration_target import build_artifact_from_labels
from froq_ray.models import load_model
from froq_ray.quality.artifact import load_artifact
from froq_ray.quality.calibration import (
    EMBEDDING_KEY,
    NORMS_KEY,
    calibration_layers,
    degraded_copies,
    observe_norms_and_embeddings,
)
from froq_ray.quality.scorer import FroqScorer
from froq_ray.storage.manifest import read_manifest
from tests.integration.jobfiles import lfw_sample, local_inputs, read_output, run_job, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def faces(tmp_path_factory, lfw_dev_dir):
    """6 identities x 3 real crops + 1 identity with a single crop + the bad files; crop paths sorted."""
    root = tmp_path_factory.mktemp("labelled")
    images = lfw_sample(lfw_dev_dir, identities=6, per_identity=3)
    single = sorted((lfw_dev_dir / "images").iterdir())[-1]
    images.append(sorted(single.glob("*.jpg"))[0])
    return root, local_inputs(root / "in", images)


def config(root: Path, mobilefacenet_pt: Path, **calibration) -> dict:
    return {
        "job": "calibrate",
        "input": {"uri": str(root / "in"), "identity_from_folder": True},
        "model": {"name": "mobilefacenet", "weights": str(mobilefacenet_pt)},
        "calibration": calibration,
        "resources": {"ray_batch_size": 4, "model_batch_size": 4},
        "output": {"uri": str(root / "cal"), "shard_size": 8, "progress_interval_s": 1},
    }


@pytest.mark.usefixtures("ray_cluster")
def test_labelled_linear_calibration_equals_the_library(faces, mobilefacenet_pt):
    root, paths = faces
    settings = {"target": "genuine", "method": "linear", "degraded_copies": 1, "cv_folds": 3}
    assert run_job("calibrate", write_config(root, "cal", config(root, mobilefacenet_pt, **settings))) == 0
    manifest = read_manifest(str(root / "cal"))
    got = load_artifact(manifest["results"]["calibration"]["artifact"])

    # independently: decode with PIL, observe in-process, copies made here, the library's fit
    model = load_model("mobilefacenet", str(mobilefacenet_pt))
    layers, calls = calibration_layers(model)
    crops = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    clean = observe_norms_and_embeddings(model, crops, layers)
    copies = observe_norms_and_embeddings(model, degraded_copies(crops, 1, 0)[0], layers)
    ids = np.array([Path(p).parent.name for p in paths], dtype=object)
    n = len(paths)
    expected = build_artifact_from_labels(
        model,
        layers,
        np.concatenate([clean[NORMS_KEY], copies[NORMS_KEY]]),
        np.concatenate([clean[EMBEDDING_KEY], copies[EMBEDDING_KEY]]),
        identities=np.concatenate([ids, ids]),
        image_ids=paths + [f"{p}#degraded0" for p in paths],
        top_n=10,
        precision="fp32",
        layer_calls=calls,
        target="genuine",
        method="linear",
        folds=3,
        sources=np.concatenate([np.arange(n), np.arange(n)]),
        extra_settings={
            "images_without_identity": 0,
            "degraded_copies": 1,
            "degraded_seed": 0,
            "degraded_images": n,
        },
    )
    assert got.method == "linear" and got.linear.layers == expected.linear.layers
    assert got.linear.penalty == expected.linear.penalty
    np.testing.assert_allclose(got.linear.weights, expected.linear.weights, rtol=1e-3, atol=1e-6)
    assert got.calibration_set == expected.calibration_set  # the same 36 images (18 + their copies), by id
    assert got.settings == json.loads(json.dumps(expected.settings))
    assert got.settings["genuine"]["images_without_target"] == 2  # the single image and its copy
    assert got.settings["genuine"]["images_used"] == 36 and len(got.quality_quantiles) == 1001
    assert (
        manifest["results"]["calibration"]["target"] == "genuine"
        and manifest["results"]["calibration"]["method"] == "linear"
    )

    # the per-image Parquet: one row per input, the embedding norm as quality, marked as such
    out = read_output(str(root / "cal"))
    ok = out[out["status"] == st.OK].sort_values("path")
    assert list(ok["path"]) == paths
    np.testing.assert_allclose(
        ok["quality"].to_numpy(np.float32), np.linalg.norm(clean[EMBEDDING_KEY], axis=1), rtol=1e-4
    )
    part = sorted((root / "cal").glob("part-*.parquet"))[0]
    assert pq.read_schema(part).metadata[b"froq_ray.score_kind"] == b"embedding_norm"

    # the artifact scores as its formula says
    scored = FroqScorer(model, got).score(crops[:6]).quality
    lin = got.linear
    index = [layers.index(name) for name in lin.layers]
    np.testing.assert_allclose(scored, lin.predict(clean[NORMS_KEY][:6][:, index]), rtol=1e-4, atol=1e-4)


def test_labelled_target_without_identities_is_a_config_error(tmp_path, mobilefacenet_pt):
    cfg = config(tmp_path, mobilefacenet_pt, target="cr")
    cfg["input"] = {"uri": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"calibration\.target: cr needs identity labels"):
        load_config(write_config(tmp_path, "c", cfg))
    cfg["calibration"] = {"degraded_copies": 2}
    with pytest.raises(ConfigError, match=r"calibration\.degraded_copies: needs a labelled"):
        load_config(write_config(tmp_path, "c", cfg))
