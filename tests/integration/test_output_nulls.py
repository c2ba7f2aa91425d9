"""Missing text is a Parquet null in every job's output (issue 13 item 2), and the output folders read with
every Parquet reader (item 11). Real LFW-dev faces plus corrupt / empty / non-image files, an identity folder
literally named ``nan`` (a person's name must stay the text "nan"), a real local Ray cluster; one run per job:
calibrate, annotate (FROQ without identities, FROQ with folder identities, pseudo_label), evaluate, filter."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from froq_ray import status as st
from tests.integration.jobfiles import (
    BAD_FILES,
    FAST_PERTURBATIONS,
    folder_writer,
    identity_of,
    lfw_sample,
    put_inputs,
    run_job,
    write_config,
)

pytestmark = pytest.mark.integration

FORBIDDEN = {"nan", "NaN", "None", "none", "null", "<NA>"}
NAN_PERSON = "nan"


def model_job(job: str, inputs: Path, out: Path, weights: Path, address: str, **sections) -> dict:
    cfg = {
        "job": job,
        "input": {"uri": str(inputs)},
        "model": {"name": "mobilefacenet", "weights": str(weights)},
        "scoring": {"perturbation": FAST_PERTURBATIONS},
        "resources": {"ray_address": address, "ray_batch_size": 4, "model_batch_size": 16},
        "output": {"uri": str(out), "shard_size": 4, "progress_interval_s": 1},
    }
    for name, value in sections.items():
        cfg.setdefault(name, {}).update(value)
    return cfg


@pytest.fixture(scope="module")
def outputs(ray_cluster, lfw_dev_dir, mobilefacenet_pt, tmp_path_factory):
    """Every job run once; returns the output folders and what the inputs were."""
    tmp = tmp_path_factory.mktemp("nulls")
    inputs = tmp / "in"
    images = lfw_sample(lfw_dev_dir, identities=6, per_identity=2)
    write = folder_writer(inputs)
    n_inputs = put_inputs(write, images)
    for i, path in enumerate(lfw_sample(lfw_dev_dir, identities=7, per_identity=2)[-2:]):  # the person "nan"
        write(f"{NAN_PERSON}/{NAN_PERSON}_{i}.jpg", path.read_bytes())
    n_inputs += 2
    address = ray_cluster.get_runtime_context().gcs_address
    out = {name: tmp / name for name in ("cal", "ann_none", "ann_folder", "pseudo", "eval", "filter")}

    def run(name: str, job: str, cfg: dict) -> None:
        assert run_job(job, write_config(tmp, name, cfg)) == 0, f"{name} failed"

    run("cal", "calibrate", model_job("calibrate", inputs, out["cal"], mobilefacenet_pt, address))
    artifact = {"artifact": str(out["cal"] / "_froq" / "calibration.json")}
    run(
        "ann_none",
        "annotate",
        model_job("annotate", inputs, out["ann_none"], mobilefacenet_pt, address, calibration=artifact),
    )
    run(
        "ann_folder",
        "annotate",
        model_job(
            "annotate",
            inputs,
            out["ann_folder"],
            mobilefacenet_pt,
            address,
            calibration=artifact,
            input={"identity_from_folder": True},
        ),
    )
    run(
        "pseudo",
        "annotate",
        model_job(
            "annotate", inputs, out["pseudo"], mobilefacenet_pt, address, scoring={"mode": "pseudo_label"}
        ),
    )
    run(
        "eval",
        "evaluate",
        {
            "job": "evaluate",
            "evaluate": {"annotations": str(out["ann_folder"]), "identity_source": "column"},
            "output": {"uri": str(out["eval"])},
        },
    )
    run(
        "filter",
        "filter",
        {
            "job": "filter",
            "filter": {"annotations": [str(out["ann_folder"])], "classifiability": {"device": "cpu"}},
            "output": {"uri": str(out["filter"])},
        },
    )
    return {"out": out, "n_inputs": n_inputs, "n_ok": len(images) + 2, "tmp": tmp}


def check_text_columns(path: Path, allow_nan_person: tuple[str, ...] = ()) -> dict[str, pd.Series]:
    """Every string column of a Parquet file: pandas' isna() is exactly pyarrow's null mask, and no cell holds
    a null written as text ("nan", "None"...), except the person named "nan" in ``allow_nan_person`` columns."""
    table = pq.read_table(path)
    frame = pd.read_parquet(path)
    text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    assert text, f"{path}: no string columns"
    assert not [f.name for f in table.schema if pa.types.is_null(f.type)], f"{path}: null-typed columns"
    columns = {}
    for name in text:
        arrow_nulls = table.column(name).is_null().to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(frame[name].isna().to_numpy(), arrow_nulls, err_msg=f"{path}:{name}")
        assert table.column(name).null_count == int(arrow_nulls.sum())
        values = [v for v in table.column(name).to_pylist() if v is not None]
        bad = {v for v in values if v in FORBIDDEN} - ({NAN_PERSON} if name in allow_nan_person else set())
        assert not bad, f"{path}: column {name} holds {bad}"
        columns[name] = frame[name]
    return columns


def parts(folder: Path) -> list[Path]:
    found = sorted(folder.glob("part-*.parquet"))
    assert found, f"no parts in {folder}"
    return found


def read_all(folder: Path) -> pd.DataFrame:
    """The folder with pandas, checked against pyarrow, duckdb and polars (the calls the README documents)."""
    frame = pd.read_parquet(folder)
    paths = frame["path"].tolist()
    assert pq.read_table(folder).column("path").to_pylist() == paths
    assert [
        r[0] for r in duckdb.sql(f"select path from read_parquet('{folder}/*.parquet')").fetchall()
    ] == paths
    assert pl.read_parquet(f"{folder}/*.parquet")["path"].to_list() == paths
    return frame


@pytest.mark.parametrize(
    "name, identities, calibrated",
    [("cal", False, False), ("ann_none", False, True), ("ann_folder", True, True), ("pseudo", False, False)],
)
def test_scoring_outputs_keep_nulls(outputs, name, identities, calibrated):
    folder = outputs["out"][name]
    frames = []
    for part in parts(folder):
        columns = check_text_columns(part, allow_nan_person=("identity",) if identities else ())
        ok = columns["status"] == st.OK
        assert columns["error"].isna().tolist() == ok.tolist()  # error: null exactly on ok rows
        assert columns["path"].notna().all() and columns["model_id"].notna().all()
        assert (
            columns["calibration_id"].notna().all() if calibrated else columns["calibration_id"].isna().all()
        )
        if identities:
            assert columns["identity"].tolist() == [identity_of(p) for p in columns["path"]]
        else:
            assert columns["identity"].isna().all()
        frames.append(pd.DataFrame(columns))
    table = pd.concat(frames, ignore_index=True)
    assert len(table) == outputs["n_inputs"] and (table["status"] == st.OK).sum() == outputs["n_ok"]
    assert ((table["status"] == st.OK) & table["error"].isna()).sum() == outputs["n_ok"]
    assert table.loc[table["status"] != st.OK, "error"].str.len().min() > 0
    if identities:
        nan_rows = table[table["path"].str.contains(f"/{NAN_PERSON}/")]
        assert len(nan_rows) == 2 and (nan_rows["identity"] == NAN_PERSON).all()
    assert any((f["status"] == st.OK).all() for f in frames), "no shard where every row is ok"
    frame = read_all(folder)
    assert frame["path"].tolist() == table["path"].tolist()
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("part-")) == ["_froq"]


def test_evaluate_runs_on_folder_identities(outputs):
    report = json.loads((outputs["out"]["eval"] / "_froq" / "manifest.json").read_text())
    results = report["results"]
    assert results["images"] == outputs["n_ok"] and results["rows_not_ok"] == len(BAD_FILES)
    assert results["identities"] == 7  # six LFW identities and the person "nan"


def test_evaluate_without_identities_is_a_clear_error(outputs, capsys):
    cfg = {
        "job": "evaluate",
        "evaluate": {"annotations": str(outputs["out"]["ann_none"]), "identity_source": "column"},
        "output": {"uri": str(outputs["tmp"] / "eval_none")},
    }
    assert run_job("evaluate", write_config(outputs["tmp"], "eval_none", cfg)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("froq evaluate: error:")]
    assert len(errors) == 1 and "has no identities (column 'identity' is null" in errors[0]
    assert "input.identity_from_folder=true" in errors[0]


def test_filter_outputs_keep_nulls(outputs):
    folder = outputs["out"]["filter"]
    keep = check_text_columns(folder / "keep_list.parquet", allow_nan_person=("identity", "nearest_identity"))
    assert keep["identity"].notna().all() and (keep["identity"] == NAN_PERSON).sum() == 2
    usable = keep["status"] == st.OK
    assert keep["nearest_identity"].notna().tolist() == usable.tolist()
    stats = check_text_columns(folder / "identity_stats.parquet", allow_nan_person=("identity",))
    assert NAN_PERSON in set(stats["identity"]) and stats["identity"].notna().all()
