"""Calibration artifact: JSON round trip, content id, schema validation, model mismatch errors, digests."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from froq_ray.imaging.contract import InputContract
from froq_ray.quality.artifact import (
    ArtifactError,
    ArtifactMismatchError,
    CalibrationArtifact,
    CalibrationSetDigest,
    check_matches,
    load_artifact,
)
from tests.tiny_models import hand_artifact, random_crops, tiny_fr_model


@pytest.fixture()
def model():
    return tiny_fr_model(size=16)


@pytest.fixture()
def artifact(model):
    art = hand_artifact(model, ["block.act", "stem"])
    art.utilities["head.2"] = math.nan  # an undefined utility
    return art


def test_json_round_trip(tmp_path, artifact):
    path = artifact.save(tmp_path / "sub" / "calibration.json")
    text = path.read_text()
    assert "NaN" not in text and json.loads(text)["utilities"]["head.2"] is None  # strict JSON
    loaded = load_artifact(path)
    assert loaded.to_dict() == artifact.to_dict()
    assert loaded.calibration_id == artifact.calibration_id
    assert math.isnan(loaded.utilities["head.2"])
    assert loaded.selected_layers == ["block.act", "stem"]
    assert loaded.best_rho == pytest.approx(0.901)
    assert set(json.loads(text)) >= {
        "model",
        "utilities",
        "greedy_curve",
        "selected_layers",
        "settings",
        "calibration_set",
        "precision",
        "software",
        "created_at",
        "calibration_id",
    }


def test_calibration_id_ignores_created_at_only(artifact):
    same = dataclasses.replace(artifact, created_at="1999-01-01T00:00:00+00:00")
    assert same.calibration_id == artifact.calibration_id
    changed = dataclasses.replace(artifact, utilities={**artifact.utilities, "stem": 0.5})
    assert changed.calibration_id != artifact.calibration_id
    assert len(artifact.calibration_id) == 16


@pytest.mark.parametrize(
    "field,value",
    [
        ("name", "other-model"),
        ("weights_sha256", "f" * 64),
        ("options", {"seed": 1}),
        ("input_contract", InputContract(size=32, channel_order="RGB", mean=(0.5,) * 3, std=(0.5,) * 3)),
    ],
)
def test_mismatched_model_is_refused(model, artifact, field, value):
    check_matches(artifact, model)  # the right model passes
    if field == "input_contract":
        other = dataclasses.replace(model, contract=value)
    elif field == "name":
        other = dataclasses.replace(model, name=value)
    elif field == "weights_sha256":
        other = dataclasses.replace(model, weights_sha256=value)
    else:
        other = dataclasses.replace(model, options=value)
    with pytest.raises(ArtifactMismatchError, match=field):
        check_matches(artifact, other)


def test_missing_selected_layer_is_refused(model):
    art = hand_artifact(model, ["stem"])
    art.selected_layers = ["stem", "ghost"]
    art.greedy_curve = [("stem", 0.9), ("ghost", 0.95)]
    art.utilities["ghost"] = 0.5
    with pytest.raises(ArtifactMismatchError, match="ghost"):
        check_matches(art, model)


def test_corrupt_and_invalid_files_give_clear_errors(tmp_path, artifact):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text(artifact.to_json()[:-40])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(bad)
    data = artifact.to_dict()

    def write(d):
        bad.write_text(json.dumps(d))
        return bad

    with pytest.raises(ArtifactError, match="missing field 'selected_layers'"):
        load_artifact(write({k: v for k, v in data.items() if k != "selected_layers"}))
    with pytest.raises(ArtifactError, match="'utilities' must be dict"):
        load_artifact(write({**data, "utilities": [1, 2]}))
    with pytest.raises(ArtifactError, match="unsupported schema"):
        load_artifact(write({**data, "schema_version": 99}))
    with pytest.raises(ArtifactError, match="weights_sha256"):
        load_artifact(
            write({**data, "model": {k: v for k, v in data["model"].items() if k != "weights_sha256"}})
        )
    with pytest.raises(ArtifactError, match="prefix"):
        load_artifact(write({**data, "selected_layers": ["stem"]}))
    with pytest.raises(ArtifactError, match="does not match its content"):
        load_artifact(write({**data, "utilities": {**data["utilities"], "stem": 0.0}}))
    with pytest.raises(ArtifactError, match="JSON object"):
        load_artifact(write([1, 2, 3]))


def test_calibration_set_digest_is_order_independent_and_kind_specific():
    crops = random_crops(6, 8, seed=2)
    a, b = CalibrationSetDigest(), CalibrationSetDigest()
    a.add_pixels(crops[:4])
    a.add_pixels(crops[4:])
    b.add_pixels(crops[::-1])
    assert (
        a.result() == b.result() and a.result().size == 6 and a.result().digest_kind == "sorted_pixel_sha256"
    )
    changed = crops.copy()
    changed[0, 0, 0, 0] ^= 1
    c = CalibrationSetDigest()
    c.add_pixels(changed)
    assert c.result().digest != a.result().digest
    ids = CalibrationSetDigest()
    ids.add_ids(["b.jpg", "a.jpg"])
    assert ids.result().digest_kind == "sorted_image_ids" and ids.result().size == 2
    with pytest.raises(ValueError, match="mix"):
        ids.add_pixels(crops)
    with pytest.raises(TypeError, match="uint8"):
        CalibrationSetDigest().add_pixels(np.zeros((1, 2, 2, 3), np.float32))


def test_from_dict_without_id_is_accepted(artifact):
    data = artifact.to_dict()
    del data["calibration_id"]
    assert CalibrationArtifact.from_dict(data).calibration_id == artifact.calibration_id
