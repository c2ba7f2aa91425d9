"""Scoring modes as objects (no Ray): each mode's schema, calibration need, constants, score kind, timeout; the
registry's error; and each mode's runner, run by a real ScoringStage, fills exactly the columns its schema adds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from froq_ray import status as st
from froq_ray.config import config_from_dict
from froq_ray.distill.artifact import save_student_artifact
from froq_ray.distill.students import build_student
from froq_ray.engine import stages
from froq_ray.engine.modes import MODES, UnknownScoringModeError, job_scoring_mode, scoring_mode
from froq_ray.engine.stages import GRAPH_COLUMN, PIXELS, ScoringStage, ScoringStageConfig, arrow_to_columns
from froq_ray.errors import UserError
from froq_ray.quality.calibration import calibration_layers, degraded_copies, observe_norms_and_embeddings
from froq_ray.storage.schema import read_metadata, schema_metadata, to_table
from tests.tiny_models import hand_artifact, random_crops, tiny_fr_model

SIZE, DIM = 16, 8
FAST = {"noise_masks": 2, "noise_alphas": [0.001], "occlusion_cell": 8}

# The schemas written out by hand (name, type, nullable), independent of storage.schema.annotation_schema.
HEAD = [
    ("path", pa.string(), False),
    ("identity", pa.string(), True),
    ("status", pa.string(), False),
    ("error", pa.string(), True),
    ("quality", pa.float32(), True),
]
TAIL = [
    ("width", pa.int32(), True),
    ("height", pa.int32(), True),
    ("model_id", pa.string(), True),
    ("calibration_id", pa.string(), True),
]
PSEUDO = [(n, pa.float32(), True) for n in ("pl_flip", "pl_noise", "pl_occlusion", "pseudo_label")]


def fields(schema: pa.Schema) -> list[tuple[str, pa.DataType, bool]]:
    return [(f.name, f.type, f.nullable) for f in schema]


def stage_config(mode: str, **kw) -> ScoringStageConfig:
    return ScoringStageConfig(
        mode=mode,
        model_name="tiny-fr",
        model_weights=None,
        model_options={},
        device="cpu",
        model_batch_size=4,
        perturbation=FAST,
        **kw,
    )


@pytest.fixture(scope="module")
def model():
    return tiny_fr_model(size=SIZE, embedding_size=DIM)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    torch.manual_seed(0)
    network = build_student("tiny_cnn", 64, {"width": 8})
    out = tmp_path_factory.mktemp("student") / "student"
    save_student_artifact(str(out), network, {"target_column": "quality", "teacher": {"model_id": "t@0"}})
    return out


# ------------------------------------------------------------------------------------------ declarations
def test_the_registry_holds_the_five_modes():
    assert list(MODES) == ["froq", "pseudo_label", "student", "calibrate", "calibrate_labelled"]
    assert all(scoring_mode(name) is MODES[name] and MODES[name].name == name for name in MODES)


def test_an_unknown_mode_is_a_user_error_naming_the_allowed_ones():
    with pytest.raises(UnknownScoringModeError) as info:
        scoring_mode("froqq")
    assert isinstance(info.value, UserError)
    assert (
        str(info.value)
        == "unknown scoring mode 'froqq': allowed are froq, pseudo_label, student, calibrate, calibrate_labelled"
    )


def test_declarations_per_mode():
    assert {n: m.needs_calibration for n, m in MODES.items()} == {
        "froq": True,
        "pseudo_label": False,
        "student": False,
        "calibrate": False,
        "calibrate_labelled": False,
    }
    assert {n: m.score_kind for n, m in MODES.items()} == {
        "froq": "froq_quality",
        "pseudo_label": "pseudo_label",
        "student": "student_prediction",
        "calibrate": "calibration_pseudo_label",
        "calibrate_labelled": "embedding_norm",
    }
    assert {n: m.default_no_progress_timeout_s for n, m in MODES.items()} == {
        "froq": 600.0,
        "pseudo_label": 7200.0,
        "student": 600.0,
        "calibrate": 7200.0,
        "calibrate_labelled": 600.0,
    }


def test_froq_schema_with_and_without_the_embedding(model):
    froq = MODES["froq"]
    with_embedding = froq.output_schema(model, stage_config("froq"))
    percentile = [("quality_percentile", pa.float32(), True)]
    assert (
        fields(with_embedding)
        == HEAD + [("embedding", pa.list_(pa.float32(), DIM), True)] + TAIL + percentile
    )
    assert froq.writes_embedding(stage_config("froq"))
    for cfg in (
        stage_config("froq", write_embedding=False),
        stage_config("froq", write_embedding=False, quality_only=True),
    ):
        assert not froq.writes_embedding(cfg)
        assert fields(froq.output_schema(model, cfg)) == HEAD + TAIL + percentile


def test_pseudo_label_and_student_schemas(model):
    # write_embedding=True in the stage config does not add an embedding where the mode computes none
    assert (
        fields(MODES["pseudo_label"].output_schema(model, stage_config("pseudo_label")))
        == HEAD + TAIL + PSEUDO
    )
    assert fields(MODES["student"].output_schema(model, stage_config("student"))) == HEAD + TAIL


def test_calibrate_schema_sizes_the_norms_by_the_candidate_layers(model):
    calibrate = MODES["calibrate"]
    layers = calibrate.candidate_layers(model)
    assert list(layers) == calibration_layers(model)[0] and len(layers) > 3
    norms = [("layer_norms", pa.list_(pa.float32(), len(layers)), True)]
    assert fields(calibrate.output_schema(model, stage_config("calibrate"), candidate_layers=layers)) == (
        HEAD + TAIL + PSEUDO + norms
    )
    # the stage config's layers are the default
    cfg = stage_config("calibrate", candidate_layers=layers[:3])
    assert fields(calibrate.output_schema(model, cfg))[-1] == ("layer_norms", pa.list_(pa.float32(), 3), True)
    with pytest.raises(ValueError, match="candidate layers"):
        calibrate.output_schema(model, stage_config("calibrate"))
    assert all(MODES[n].candidate_layers(model) is None for n in ("froq", "pseudo_label", "student"))


def test_the_schema_metadata_names_the_score_kind_and_survives_to_table(model):
    for name, mode in MODES.items():
        cfg = stage_config(name, candidate_layers=("stem", "block"))
        schema = mode.output_schema(model, cfg)
        assert read_metadata(schema) == {
            "froq_ray.score_kind": mode.score_kind,
            "froq_ray.score_direction": "higher_is_better",
        }
        empty = {f.name: [] for f in schema}
        table = to_table(empty, schema, schema_metadata("d" * 64, "m@1", None))
        meta = read_metadata(table.schema)
        assert meta["froq_ray.score_kind"] == mode.score_kind and meta["froq_ray.model_id"] == "m@1"
    assert (
        schema_metadata("d", "m", None, "student_prediction")[b"froq_ray.score_kind"] == b"student_prediction"
    )
    with pytest.raises(ValueError, match="score kind must be one of"):
        schema_metadata("d", "m", None, "quality")


def test_constants(model):
    assert MODES["froq"].constants(model, "cal-1") == {"model_id": model.model_id, "calibration_id": "cal-1"}
    for name in ("pseudo_label", "student", "calibrate", "calibrate_labelled"):
        assert MODES[name].constants(model, None) == {"model_id": model.model_id, "calibration_id": None}
        with pytest.raises(ValueError, match="uses no calibration"):
            MODES[name].constants(model, "cal-1")
    with pytest.raises(ValueError, match="needs a calibration_id"):
        MODES["froq"].constants(model, None)


def test_the_job_picks_its_mode():
    base = {"input": {"uri": "/in"}, "output": {"uri": "/out"}}
    assert job_scoring_mode(config_from_dict({**base, "job": "calibrate"})) is MODES["calibrate"]
    labelled = {
        **base,
        "input": {"uri": "/in", "identity_from_folder": True},
        "calibration": {"target": "cr"},
    }
    assert job_scoring_mode(config_from_dict({**labelled, "job": "calibrate"})) is MODES["calibrate_labelled"]
    for name in ("froq", "pseudo_label"):
        cfg = config_from_dict({**base, "job": "annotate", "scoring": {"mode": name}})
        assert job_scoring_mode(cfg) is MODES[name]
    cfg = config_from_dict(
        {**base, "job": "annotate", "scoring": {"mode": "student", "student_artifact": "/s"}}
    )
    assert job_scoring_mode(cfg) is MODES["student"]


# ------------------------------------------------------------------------------------------ runners
def decoded(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """What the decode stage hands the scoring stage (pass-through columns, pixels, status, error, size)."""
    n = len(pixels)
    statuses = [st.CORRUPT] + [st.OK] * (n - 1)  # row 0 failed to decode: never scored, NaN results
    return {
        "row": np.arange(n, dtype=np.int64),
        "shard": np.zeros(n, dtype=np.int64),
        "path": np.asarray([f"id/{i}.jpg" for i in range(n)], dtype=object),
        "identity": np.asarray(["id"] * n, dtype=object),
        PIXELS: pixels,
        "status": np.asarray(statuses, dtype=object),
        "error": np.asarray(["corrupt input"] + [None] * (n - 1), dtype=object),
        "width": np.full(n, pixels.shape[2], dtype=np.int32),
        "height": np.full(n, pixels.shape[1], dtype=np.int32),
    }


@pytest.mark.parametrize("name", list(MODES))
@pytest.mark.usefixtures("one_torch_thread")
def test_each_runner_fills_exactly_the_columns_its_schema_adds(name, model, student_dir, monkeypatch):
    mode = MODES[name]
    kw = {}
    if name == "froq":
        kw["artifact_json"] = hand_artifact(model, ["block.act", "stem"]).to_json()
    elif name == "calibrate":
        kw["candidate_layers"] = mode.candidate_layers(model)
    elif name == "calibrate_labelled":
        kw["candidate_layers"] = mode.candidate_layers(model)
        kw["degraded_copies"] = 2
    elif name == "student":
        kw["student_artifact"] = str(student_dir)
    cfg = stage_config(name, **kw)
    if (
        name != "student"
    ):  # the student is loaded by its mode from the artifact; the FR modes get the tiny model
        monkeypatch.setattr(stages, "load_scoring_model", lambda _cfg: model)
    stage = ScoringStage(cfg)
    size = stage.model.contract.size
    out = arrow_to_columns(stage(decoded(random_crops(5, size, seed=3))))

    schema = mode.output_schema(stage.model, cfg)
    constants = mode.constants(stage.model, "cal-1" if mode.needs_calibration else None)
    # row bookkeeping, the score seconds and the observed graph's name (engine.write summarises them per shard)
    produced = set(out) - {"row", "shard", "_t_score", GRAPH_COLUMN}
    if name == "froq":  # a CPU actor in fp32 runs the frozen observed graph (graph: auto)
        assert stage.graph == "frozen" and list(out[GRAPH_COLUMN]) == ["frozen"] * 5
    else:
        assert stage.graph is None and GRAPH_COLUMN not in out
    assert produced | set(constants) == set(schema.names)  # nothing missing, nothing extra
    assert np.isnan(out["quality"][0]) and np.isfinite(out["quality"][1:]).all()
    if name in ("pseudo_label", "calibrate"):
        np.testing.assert_array_equal(out["quality"], out["pseudo_label"])
    n = len(out["path"])
    table = to_table({**{k: out[k] for k in produced}, **{k: [v] * n for k, v in constants.items()}}, schema)
    assert table.schema.equals(schema)


def test_labelled_calibrate_runner_observes_the_images_and_their_degraded_copies(model, monkeypatch):
    mode = MODES["calibrate_labelled"]
    layers = mode.candidate_layers(model)
    cfg = stage_config("calibrate_labelled", candidate_layers=layers, degraded_copies=2, degraded_seed=5)
    monkeypatch.setattr(stages, "load_scoring_model", lambda _: model)
    crops = random_crops(4, SIZE, seed=6)
    out = ScoringStage(cfg)._runner(crops)
    clean = observe_norms_and_embeddings(model, crops, list(layers))
    copies = observe_norms_and_embeddings(model, degraded_copies(crops, 2, 5)[0], list(layers))
    np.testing.assert_allclose(out["layer_norms"], clean["layer_norms"], rtol=1e-6)
    np.testing.assert_allclose(out["embedding"], clean["embedding"], rtol=1e-6)
    np.testing.assert_allclose(out["quality"], np.linalg.norm(clean["embedding"], axis=1), rtol=1e-6)
    np.testing.assert_allclose(  # row i holds copy 0 then copy 1 of image i
        out["degraded_layer_norms"].reshape(8, len(layers)), copies["layer_norms"], rtol=1e-6
    )
    np.testing.assert_allclose(out["degraded_embedding"].reshape(8, DIM), copies["embedding"], rtol=1e-6)
    assert fields(mode.output_schema(model, cfg))[-2:] == [
        ("degraded_layer_norms", pa.list_(pa.float32(), 2 * len(layers)), True),
        ("degraded_embedding", pa.list_(pa.float32(), 2 * DIM), True),
    ]


@pytest.mark.parametrize("with_quantiles", [True, False])
def test_froq_runner_writes_the_percentile_of_the_stored_quantiles(model, monkeypatch, with_quantiles):
    import dataclasses

    from froq_ray.quality.percentile import quality_percentile
    from froq_ray.quality.scorer import FroqScorer

    artifact = hand_artifact(model, ["block.act", "stem"])
    if with_quantiles:
        reference = FroqScorer(model, artifact).score(random_crops(40, SIZE, seed=1)).quality
        artifact = dataclasses.replace(
            artifact, quality_quantiles=np.quantile(reference, np.linspace(0, 1, 1001)).tolist()
        )
    monkeypatch.setattr(stages, "load_scoring_model", lambda _: model)
    out = ScoringStage(stage_config("froq", artifact_json=artifact.to_json()))._runner(
        random_crops(6, SIZE, seed=2)
    )
    if with_quantiles:
        expected = quality_percentile(out["quality"], np.asarray(artifact.quality_quantiles))
        np.testing.assert_array_equal(out["quality_percentile"], expected)
        assert (
            out["quality_percentile"].dtype == np.float32
            and (expected >= 0).all()
            and (expected <= 100).all()
        )
    else:  # an artifact without quantiles (schema version 1): the column is there, every value null
        assert np.isnan(out["quality_percentile"]).all()
