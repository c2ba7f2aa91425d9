"""The distill job's driver steps without Ray: reading annotations, teacher checks, split, the degradation stage,
and the output modes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from froq_ray import status as st
from froq_ray.config import config_from_dict
from froq_ray.engine.stages import PIXELS
from froq_ray.imaging.degrade import Degradation, apply_degradation
from froq_ray.pipeline.distill import OUTPUTS, TRAIN_FOLDER, open_distill_output
from froq_ray.pipeline.distill_inputs import (
    TARGET_MISSING,
    AnnotationRows,
    ColumnChoice,
    DistillInputError,
    Teacher,
    check_teacher,
    read_annotation_rows,
    split_table,
)
from froq_ray.pipeline.self_training import (
    DegradeStageConfig,
    degrade_and_store,
    degraded_name,
    self_training_listing,
)
from froq_ray.storage.run_state import OutputStateError
from froq_ray.storage.schema import annotation_schema, to_table
from tests.data_factory import make_face_like_image
from tests.tiny_models import hand_artifact, tiny_fr_model


def annotations(tmp_path, name: str, rows: list[tuple]) -> str:
    """A part file with (path, identity, status, quality, model_id, calibration_id) rows; returns its folder."""
    folder = tmp_path / name
    folder.mkdir()
    cols = {
        k: [r[i] for r in rows]
        for i, k in enumerate(("path", "identity", "status", "quality", "model_id", "calibration_id"))
    }
    n = len(rows)
    cols.update({"error": [None] * n, "width": [112] * n, "height": [112] * n})
    pq.write_table(to_table(cols, annotation_schema(None)), folder / "part-00000.parquet")
    return str(folder)


def distill_cfg(tmp_path, **sections):
    data = {"job": "distill", "distill": {"annotations": "a"}, "output": {"uri": str(tmp_path / "out")}}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value}
    return config_from_dict(data)


def test_reading_keeps_ok_finite_rows_counts_the_rest_and_refuses_duplicates(tmp_path):
    a = annotations(
        tmp_path,
        "a",
        [
            ("/d/p2/b.jpg", "p2", st.OK, 3.0, "m@1", "c1"),
            ("/d/p1/a.jpg", "p1", st.OK, 1.0, "m@1", "c1"),
            ("/d/p1/bad.jpg", "p1", st.CORRUPT, np.nan, "m@1", "c1"),
            ("/d/p3/n.jpg", None, st.OK, np.nan, "m@1", "c1"),
        ],
    )
    rows = read_annotation_rows([a], {}, ColumnChoice("quality"))
    assert list(rows.table["path"]) == ["/d/p1/a.jpg", "/d/p2/b.jpg"]  # sorted by path
    assert rows.rows_read == 4 and rows.dropped == {st.CORRUPT: 1, TARGET_MISSING: 1}
    assert list(rows.table["target"]) == [1.0, 3.0] and list(rows.table["model_id"]) == ["m@1", "m@1"]
    folder = read_annotation_rows([a], {}, ColumnChoice("quality", "folder"))
    assert list(folder.table["identity"]) == ["p1", "p2"]
    with pytest.raises(DistillInputError, match="no column"):
        read_annotation_rows([a], {}, ColumnChoice("cr"))
    b = annotations(tmp_path, "b", [("/d/p1/a.jpg", "p1", st.OK, 2.0, "m@1", "c1")])
    with pytest.raises(DistillInputError, match="more than once"):
        read_annotation_rows([a, b], {}, ColumnChoice("quality"))


def test_a_filter_output_folder_is_read_through_its_keep_list(tmp_path):
    folder = tmp_path / "filtered"
    folder.mkdir()
    keep = pd.DataFrame(
        {
            "path": ["/x/p/1.jpg", "/x/q/2.jpg"],
            "identity": ["p", "q"],
            "keep": [True, False],
            "status": [st.OK, st.OK],
            "cr": [0.5, np.float32(0.25)],
        }
    )
    keep.to_parquet(folder / "keep_list.parquet")
    (folder / "summary.json").write_text("{}")
    rows = read_annotation_rows([str(folder)], {}, ColumnChoice("cr"))
    assert rows.files == [str(folder / "keep_list.parquet")]
    assert list(rows.table["target"]) == [0.5, 0.25] and rows.table["model_id"].isna().all()


def teacher_with_calibration() -> Teacher:
    model = tiny_fr_model()
    return Teacher(model, hand_artifact(model, ["block.conv1"]), "froq")


def rows_with(model_id, calibration_id) -> AnnotationRows:
    table = pd.DataFrame(
        {
            "path": ["/a.jpg"],
            "identity": ["p"],
            "target": [1.0],
            "model_id": [model_id],
            "calibration_id": [calibration_id],
            "source_path": [None],
        }
    )
    return AnnotationRows(table, ["x"], 1)


def test_teacher_checks_name_the_mismatch():
    teacher = teacher_with_calibration()
    good = rows_with(teacher.model.model_id, teacher.calibration_id)
    assert check_teacher(good, teacher, self_training=True)["verified"]
    with pytest.raises(DistillInputError, match="made by other@1 but the teacher"):
        check_teacher(rows_with("other@1", teacher.calibration_id), teacher, False)
    with pytest.raises(DistillInputError, match="from calibration deadbeef"):
        check_teacher(rows_with(teacher.model.model_id, "deadbeef"), teacher, False)
    with pytest.raises(DistillInputError, match="target_column=pseudo_label"):
        check_teacher(rows_with(teacher.model.model_id, ""), teacher, False)
    unknown = rows_with(None, None)
    assert check_teacher(unknown, teacher, self_training=False)["verified"] is False
    with pytest.raises(DistillInputError, match="no model_id column"):
        check_teacher(unknown, teacher, self_training=True)
    assert check_teacher(good, Teacher(), self_training=False) == {
        "annotation_model_ids": [teacher.model.model_id],
        "verified": False,
    }


def test_split_keeps_copies_with_their_source_and_never_leaks(tmp_path):
    paths = [f"/d/p{i % 7}/{i}.jpg" for i in range(40)]
    table = pd.DataFrame(
        {"path": paths, "identity": [p.split("/")[2] for p in paths], "target": 1.0, "source_path": None}
    )
    copies = pd.DataFrame(
        {
            "path": [f"/out/c{i}.png" for i in range(40)],
            "identity": table["identity"],
            "target": 2.0,
            "source_path": paths,
        }
    )
    cfg = distill_cfg(tmp_path, distill={"validation_fraction": 0.3, "split_seed": 1})
    split = split_table(pd.concat([table, copies], ignore_index=True), cfg)
    assert split.groupby("split_key")["side"].nunique().max() == 1
    assert set(split["side"]) == {"train", "validation"}
    no_ids = distill_cfg(tmp_path, distill={"identity_source": "none", "validation_fraction": 0.3})
    by_image = split_table(pd.concat([table, copies], ignore_index=True), no_ids).set_index("path")
    for copy, source in zip(
        copies["path"], paths, strict=True
    ):  # without identities a copy follows its source image
        assert by_image.loc[copy, "split_key"] == source
        assert by_image.loc[copy, "side"] == by_image.loc[source, "side"]


def test_degrade_stage_writes_replayable_pngs_and_leaves_failed_rows_alone(tmp_path):
    crops = np.stack([make_face_like_image(seed=i) for i in range(3)])
    batch = {
        "row": np.array([4, 5, 6]),
        "shard": np.zeros(3, int),
        "path": np.array(["/s/a.jpg", "/s/a.jpg", "/s/b.jpg"], dtype=object),
        PIXELS: crops.copy(),
        "status": np.array([st.OK, st.OK, st.CORRUPT], dtype=object),
        "error": np.array([None] * 3, object),
    }
    cfg = DegradeStageConfig(str(tmp_path / "img"), copies=2, seed=3, kinds=("blur", "occlusion", "noise"))
    out = degrade_and_store(batch, cfg)
    # rows 4 and 5 are copies 0 and 1 of a.jpg; row 6 (corrupt) gets its would-be name and no file
    assert list(out["path"]) == [str(tmp_path / "img" / degraded_name("/s/a.jpg", c)) for c in (0, 1)] + [
        str(tmp_path / "img" / degraded_name("/s/b.jpg", 0))
    ]
    assert list(out["source_path"]) == ["/s/a.jpg", "/s/a.jpg", "/s/b.jpg"]
    assert out["degradation"][2] is None and not (tmp_path / "img" / degraded_name("/s/b.jpg", 0)).exists()
    assert np.array_equal(out[PIXELS][2], crops[2])
    for i in (0, 1):
        png = np.asarray(Image.open(out["path"][i]).convert("RGB"))
        assert np.array_equal(png, out[PIXELS][i]) and not np.array_equal(png, crops[i])
        replay = crops[i]
        for step in json.loads(out["degradation"][i]):
            replay = apply_degradation(replay, Degradation(step["kind"], step["params"]))
        assert np.array_equal(replay, png)
    again = degrade_and_store({**batch, PIXELS: crops.copy()}, cfg)  # deterministic: same copies again
    assert np.array_equal(again[PIXELS], out[PIXELS]) and list(again["degradation"]) == list(
        out["degradation"]
    )


def test_self_training_listing_is_source_major_and_seeded(tmp_path):
    rows = pd.DataFrame({"path": [f"/i/{k}.jpg" for k in range(10)], "identity": list("aabbccddee")})
    cfg = distill_cfg(tmp_path, self_training={"enabled": True, "copies": 3, "fraction": 0.4, "seed": 2})
    listing = self_training_listing(rows, cfg)
    assert len(listing) == 12 and listing["path"].nunique() == 4
    for k in range(4):
        assert listing["path"].iloc[3 * k] == listing["path"].iloc[3 * k + 2]
    assert listing.equals(self_training_listing(rows, cfg))


def test_output_modes(tmp_path):
    out = tmp_path / "out"
    (out / TRAIN_FOLDER / "distill").mkdir(parents=True)
    (out / "split.parquet").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")
    # an earlier distill run's record (without it these files are not distill's and every mode refuses them)
    (out / "_froq").mkdir()
    (out / "_froq" / "run.json").write_text(json.dumps({"job": "distill", "config_digest": "c0"}))
    with pytest.raises(OutputStateError, match="already holds split.parquet, _train"):
        open_distill_output(distill_cfg(tmp_path, output={"mode": "error_if_exists"}), "c1", "d1", False)
    open_distill_output(distill_cfg(tmp_path, output={"mode": "overwrite"}), "c1", "d1", False)
    assert sorted(p.name for p in out.iterdir()) == ["_froq", "notes.txt"]  # only this job's files went
    assert sorted(p.name for p in (out / "_froq").iterdir()) == ["run.json"]
    (out / TRAIN_FOLDER).mkdir()
    state = open_distill_output(distill_cfg(tmp_path), "c1", "d1", False)
    assert state.resumed and (out / TRAIN_FOLDER).exists()
    with pytest.raises(OutputStateError, match="cannot resume"):
        open_distill_output(distill_cfg(tmp_path), "c2", "d1", False)
    forced = open_distill_output(distill_cfg(tmp_path), "c2", "d1", True)
    assert forced.forced and not (out / TRAIN_FOLDER).exists()  # checkpoints of another config are dropped
    assert set(OUTPUTS) >= {
        "card.json",
        "weights.safetensors",
        "student.onnx",
        "split.parquet",
        "self_training",
    }


def test_the_output_may_not_be_an_annotations_folder(tmp_path):
    folder = annotations(tmp_path, "ann", [("/d/p/a.jpg", "p", st.OK, 1.0, "m@1", "c1")])
    cfg = distill_cfg(tmp_path, output={"uri": folder})
    with pytest.raises(OutputStateError, match="holds the input .*part-00000.parquet"):
        open_distill_output(cfg, "c", "d", False, inputs=(f"{folder}/part-00000.parquet",))


def test_a_decode_request_larger_than_the_local_node_is_refused_before_the_output_is_opened(
    tmp_path, monkeypatch
):
    import ray

    from froq_ray.engine.runtime import ResourceRequestError
    from froq_ray.pipeline.distill import run_distill

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the job would start its own local Ray
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    folder = annotations(
        tmp_path,
        "ann",
        [("/d/p/a.jpg", "p", st.OK, 1.0, None, None), ("/d/q/b.jpg", "q", st.OK, 2.0, None, None)],
    )
    cfg = distill_cfg(
        tmp_path, distill={"annotations": [folder]}, resources={"num_cpus": 2, "decode_num_cpus": 3}
    )
    with pytest.raises(
        ResourceRequestError, match=r"^resources\.decode_num_cpus=3 is more than the 2 CPU\(s\) "
    ):
        run_distill(cfg)
    assert not (tmp_path / "out").exists()
