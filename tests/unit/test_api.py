"""The public Python API (froq_ray.Scorer) without Ray: real LFW-dev crops through the built-in dlib model and its
shipped calibration. Values are checked against the method core (FroqScorer) on crops decoded here with PIL;
paths, bytes and arrays agree; bad inputs become rows with their status; importing and scoring never imports Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import froq_ray
from froq_ray import status as st
from froq_ray.api import ScorerInputError
from froq_ray.config import ConfigError
from froq_ray.errors import UserError
from froq_ray.models import load_model
from froq_ray.pipeline.artifacts import read_artifact
from froq_ray.quality.scorer import FroqScorer
from tests.conftest import REPO_ROOT
from tests.data_factory import bad_inputs, encode, make_face_like_image
from tests.integration.jobfiles import env_with_repo_on_path, lfw_sample

COLUMNS = [
    "path",
    "identity",
    "status",
    "error",
    "quality",
    "embedding",
    "width",
    "height",
    "model_id",
    "calibration_id",
    "quality_percentile",  # froq mode (issue 15): share of the calibration set scoring lower, 0-100
]


@pytest.fixture(scope="module")
def scorer():
    return froq_ray.Scorer.load(device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def faces(lfw_dev_dir) -> list[Path]:
    return lfw_sample(lfw_dev_dir, identities=3, per_identity=2)


@pytest.fixture(scope="module")
def truth(faces):
    """quality (N,) and embedding (N, 128) of the faces from FroqScorer on PIL-decoded crops."""
    model = load_model("dlib_resnet_v1")
    artifact = read_artifact("builtin", model)
    crops = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in faces])
    result = FroqScorer(model, artifact, device="cpu").score(crops)
    return result.quality, result.embedding, artifact.calibration_id, model.model_id


def test_paths_give_the_method_cores_values(scorer, faces, truth):
    quality, embedding, calibration_id, model_id = truth
    df = scorer.score([str(p) for p in faces], identities=[p.parent.name for p in faces])
    assert list(df.columns) == COLUMNS and len(df) == len(faces)
    assert df.path.tolist() == [str(p) for p in faces]
    assert df.identity.tolist() == [p.parent.name for p in faces]
    assert (df.status == st.OK).all() and df.error.isna().all()
    assert df.quality.dtype == np.float32 and df.width.dtype == np.int32 and df.height.dtype == np.int32
    np.testing.assert_allclose(df.quality.to_numpy(), quality, rtol=1e-5)
    # the shipped artifact stores 1,001 quantiles: the percentile of each quality, read off them
    quantiles = np.asarray(read_artifact("builtin", load_model("dlib_resnet_v1")).quality_quantiles)
    assert df.quality_percentile.dtype == np.float32
    np.testing.assert_allclose(
        df.quality_percentile.to_numpy(),
        np.interp(df.quality.to_numpy(), quantiles, np.linspace(0, 100, 1001)),
        atol=1e-3,
    )
    got = np.stack(df.embedding.to_list())
    assert got.dtype == np.float32 and got.shape == (len(faces), 128)
    np.testing.assert_allclose(got, embedding, rtol=1e-4, atol=1e-6)
    assert (df.width == 112).all() and (df.height == 112).all()
    assert set(df.model_id) == {model_id} and set(df.calibration_id) == {calibration_id}
    assert scorer.model_id == model_id and scorer.calibration_id == calibration_id


def test_bytes_arrays_and_path_objects_agree_with_paths(scorer, faces):
    by_path = scorer.score(faces)  # pathlib.Path items
    assert by_path.path.tolist() == [str(p) for p in faces]
    by_bytes = scorer.score([p.read_bytes() for p in faces], names=[p.name for p in faces])
    array = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in faces])
    by_array = scorer.score(array)
    by_list = scorer.score(list(array))
    assert by_bytes.path.tolist() == [p.name for p in faces]
    assert by_array.path.tolist() == [f"array[{i}]" for i in range(len(faces))]
    for other in (by_bytes, by_array, by_list):
        np.testing.assert_array_equal(other.quality.to_numpy(), by_path.quality.to_numpy())
        np.testing.assert_array_equal(np.stack(other.embedding), np.stack(by_path.embedding))
        pd.testing.assert_frame_equal(
            other.drop(columns=["path", "embedding"]), by_path.drop(columns=["path", "embedding"])
        )


def test_an_array_of_another_size_is_resized_like_a_decoded_file(scorer):
    image = make_face_like_image(seed=5, size=(150, 130))
    from_array = scorer.score(image[None])
    from_png = scorer.score([encode(image, "PNG")])
    assert (from_array.width.tolist(), from_array.height.tolist()) == ([130], [150])
    np.testing.assert_array_equal(from_array.quality.to_numpy(), from_png.quality.to_numpy())


def test_bad_inputs_are_rows_with_their_status(scorer, faces, tmp_path):
    bad = bad_inputs()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(bad["jpeg_truncated_half"])
    missing = tmp_path / "missing.jpg"
    df = scorer.score([str(faces[0]), str(corrupt), str(missing), str(faces[1])])
    assert df.status.tolist() == [st.OK, st.CORRUPT, st.READ_ERROR, st.OK]
    assert df.error.iloc[1] and df.error.iloc[2] == f"{missing}: not found"
    assert df.error.iloc[[0, 3]].isna().all()
    assert df.quality.iloc[[1, 2]].isna().all() and df.embedding.iloc[[1, 2]].isna().all()
    assert df.quality.iloc[[0, 3]].notna().all()
    assert df.width.iloc[[1, 2]].tolist() == [0, 0]

    blobs = scorer.score([b"", bad["text"], bad["png_truncated"], faces[0].read_bytes()])
    assert blobs.status.tolist() == [st.EMPTY, st.NOT_AN_IMAGE, st.CORRUPT, st.OK]
    assert blobs.error.iloc[:3].notna().all()


def test_quality_only_leaves_out_the_embedding(faces):
    fast = froq_ray.Scorer.load(device="cpu", quality_only=True)
    df = fast.score(faces[:2])
    assert "embedding" not in df.columns
    assert list(df.columns) == [c for c in COLUMNS if c != "embedding"]
    assert df.quality.notna().all()


def test_empty_input_gives_the_columns(scorer):
    df = scorer.score([])
    assert list(df.columns) == COLUMNS and len(df) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp64"}, "precision: must be one of"),
        ({"batch_size": 0}, "batch_size: must be >= 1"),
        ({"device": "tpu"}, "device: must be one of"),
    ],
)
def test_bad_settings_name_the_keyword(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        froq_ray.Scorer.load(**kwargs)


def test_unknown_model_and_missing_artifact_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model 'dlib_resnet_v2'"):
        froq_ray.Scorer.load("dlib_resnet_v2")
    with pytest.raises(UserError, match="calibration artifact not found"):
        froq_ray.Scorer.load(calibration=tmp_path / "nope.json", device="cpu")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("face.jpg", "give a list of images, not one str"),
        (np.zeros((2, 8, 8, 3), np.float32), r"uint8 \(N, H, W, 3\)"),
        (["a.jpg", b"\xff\xd8"], "item 0 is path, item 1 is bytes"),
        ([1.5], "item 0: expected a path"),
    ],
)
def test_bad_inputs_kinds_are_refused_naming_the_item(scorer, images, message):
    with pytest.raises(ScorerInputError, match=message):
        scorer.score(images)


def test_names_and_identities_must_align(scorer, faces):
    with pytest.raises(ScorerInputError, match="identities has 1 entries for 2"):
        scorer.score(faces[:2], identities=["x"])
    with pytest.raises(ScorerInputError, match=r"identities\[1\] must be text or None, got int 7"):
        scorer.score(faces[:2], identities=["x", 7])
    with pytest.raises(ScorerInputError, match="names are for bytes"):
        scorer.score(faces[:2], names=["a", "b"])


def test_import_and_score_never_import_ray(faces):
    code = (
        "import sys, json, froq_ray\n"
        "light = 'torch' not in sys.modules and 'ray' not in sys.modules\n"
        f"df = froq_ray.Scorer.load(device='cpu').score([{str(faces[0])!r}])\n"
        "print(json.dumps([light, 'ray' in sys.modules, df.status.tolist()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env_with_repo_on_path(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, False, ["ok"]]


def test_ray_stage_is_the_map_batches_arguments():
    from froq_ray.user_stage import ScorerActor

    stage = froq_ray.ray_stage(device="cuda", concurrency=(1, 4), batch_size=64, model_batch_size=32)
    assert dict(stage) == {
        "fn": ScorerActor,
        "fn_constructor_kwargs": stage.fn_constructor_kwargs,
        "num_cpus": 1.0,
        "num_gpus": 1.0,
        "concurrency": (1, 4),
        "batch_size": 64,
        "batch_format": "pyarrow",
    }
    assert stage.fn_constructor_kwargs["scorer"]["batch_size"] == 32
    assert stage.fn_constructor_kwargs["scorer"]["device"] == "cuda"
    assert froq_ray.ray_stage().num_gpus == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"device": "cuda", "num_gpus": 0}, "RayStageError", "device='cuda' needs num_gpus > 0"),
        ({"concurrency": (3, 1)}, "RayStageError", "concurrency must be"),
        ({"batch_size": 0}, "RayStageError", "batch_size must be an integer >= 1"),
        ({"precision": "fp8"}, "ConfigError", "precision: must be one of"),
    ],
)
def test_ray_stage_refuses_bad_settings_on_the_driver(kwargs, error, message):
    from froq_ray import user_stage

    cls = getattr(user_stage, error) if error != "ConfigError" else ConfigError
    with pytest.raises(cls, match=message):
        froq_ray.ray_stage(**kwargs)


def test_s3_uris_read_with_the_scorers_storage_options(s3, faces, scorer):
    fs = s3.filesystem()
    uris = [s3.uri("faces", p.parent.name, p.name) for p in faces[:2]]
    for path, uri in zip(faces[:2], uris, strict=True):
        fs.pipe(uri.removeprefix("s3://"), path.read_bytes())
    remote = froq_ray.Scorer.load(device="cpu", batch_size=4, storage_options=s3.storage_options)
    df = remote.score([*uris, s3.uri("faces", "missing.jpg")])
    assert df.path.tolist() == [*uris, s3.uri("faces", "missing.jpg")]
    assert df.status.tolist() == [st.OK, st.OK, st.READ_ERROR]
    assert df.error[2] == f"{s3.uri('faces', 'missing.jpg')}: not found"
    local = scorer.score(faces[:2])
    np.testing.assert_array_equal(df.quality[:2].to_numpy(), local.quality.to_numpy())


def test_calibration_that_is_no_calibration_json_is_one_artifact_error(tmp_path):
    """None, an image, a folder: an ArtifactError of one line naming the value (no TypeError,
    UnicodeDecodeError or IsADirectoryError); a calibrate output folder names the file to pass instead."""
    from froq_ray.quality.artifact import ArtifactError

    with pytest.raises(
        ArtifactError, match=r"^calibration must be 'builtin' or a calibration.json path / URI, got None$"
    ):
        froq_ray.Scorer.load(calibration=None, device="cpu")  # type: ignore[arg-type]
    image = tmp_path / "face.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(
        ArtifactError, match=rf"^{image} is not a calibration.json: not UTF-8 text \(byte \d+ is 0x"
    ):
        froq_ray.Scorer.load(calibration=image, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ArtifactError,
        match=rf"^calibration artifact {empty} is a folder, not a calibration.json: pass a calibration.json file",
    ):
        froq_ray.Scorer.load(calibration=empty, device="cpu")
    calibrated = tmp_path / "calibrated"
    (calibrated / "_froq").mkdir(parents=True)
    (calibrated / "_froq" / "calibration.json").write_text("{}")
    with pytest.raises(ArtifactError) as folder:
        froq_ray.Scorer.load(calibration=calibrated, device="cpu")
    assert str(folder.value) == (
        f"calibration artifact {calibrated} is a folder, not a calibration.json: pass the calibration.json "
        f"inside it: {calibrated}/_froq/calibration.json"
    )
    from froq_ray.quality.artifact import load_artifact

    with pytest.raises(ArtifactError, match=rf"^{image} is not a calibration.json: not UTF-8 text"):
        load_artifact(image)
    with pytest.raises(ArtifactError, match=rf"^calibration artifact {empty} is a folder"):
        load_artifact(empty)


def test_cuda_without_cuda_is_a_config_error_naming_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as error:
        froq_ray.Scorer.load(device="cuda")
    assert str(error.value) == (
        "device: 'cuda' requested but torch sees no CUDA device here; use 'auto' (CUDA when visible) or 'cpu' "
        "(froq_ray.Scorer)"
    )
