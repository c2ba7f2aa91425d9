"""The filter job end to end on tiny annotation shards (no Ray): keep-list, stats, summary, PNG, safety."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from froq_ray.cli import main
from froq_ray.config import ConfigError, FilterJob, config_from_dict
from froq_ray.curation.classifiability import classifiability
from froq_ray.pipeline.filter import run_filter
from froq_ray.storage.run_state import OutputStateError
from froq_ray.storage.schema import annotation_schema, to_table

DIM = 8


def annotation_rows(seed: int = 0) -> pd.DataFrame:
    """A: 4 images + 1 that is really B's (index 4); B: 3; C: 1; one corrupt A row without embedding."""
    rng = np.random.default_rng(seed)
    centres = {k: rng.normal(size=DIM) for k in "ABC"}
    truth = ["A"] * 4 + ["B"] + ["B"] * 3 + ["C", "A"]
    labels = ["A"] * 5 + ["B"] * 3 + ["C", "A"]
    embeddings = np.stack([centres[t] + 0.25 * rng.normal(size=DIM) for t in truth]).astype(np.float32)
    status = ["ok"] * 9 + ["corrupt"]
    embeddings[9] = np.nan  # to_table writes a null embedding
    return pd.DataFrame(
        {
            "path": [f"/faces/{label}/{i:02d}.jpg" for i, label in enumerate(labels)],
            "identity": labels,
            "status": status,
            "error": [None] * 9 + ["truncated"],
            "quality": np.linspace(1.0, 0.1, 10).astype(np.float32),
            "embedding": list(embeddings),
        }
    )


def write_annotations(folder: Path, rows: pd.DataFrame) -> list[Path]:
    schema = annotation_schema(DIM)
    folder.mkdir(parents=True)
    parts = []
    for k, chunk in enumerate((rows.iloc[:6], rows.iloc[6:])):
        columns = {f.name: chunk[f.name].tolist() if f.name in chunk else [None] * len(chunk) for f in schema}
        columns["embedding"] = np.stack(chunk["embedding"].to_numpy())
        path = folder / f"part-{k:05d}.parquet"
        pq.write_table(to_table(columns, schema), path)
        parts.append(path)
    return parts


def job(annotations: Path, out: Path, mode: str = "error_if_exists", **policies) -> FilterJob:
    return config_from_dict(
        {
            "job": "filter",
            "filter": {
                "annotations": str(annotations),
                "classifiability": {"chunk_rows": 2, "block_rows": 3, "block_centres": 2, "device": "cpu"},
                "policies": policies,
                "histogram_bins": 5,
            },
            "output": {"uri": str(out), "mode": mode},
        }
    )


def digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_filter_job_end_to_end(tmp_path: Path):
    rows = annotation_rows()
    parts = write_annotations(tmp_path / "ann", rows)
    before = digest(parts)
    result = run_filter(
        job(tmp_path / "ann", tmp_path / "out", min_identity_images=2, label_noise={"drop": True})
    )
    assert digest(parts) == before and sorted(p.name for p in (tmp_path / "ann").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]

    keep = pd.read_parquet(tmp_path / "out" / "keep_list.parquet")
    assert keep["path"].tolist() == rows["path"].tolist()  # every input row, in input order
    reason = dict(zip(keep["path"], keep["reason"], strict=True))
    assert reason["/faces/A/09.jpg"] == "corrupt" and not keep["keep"].iloc[9]
    assert reason["/faces/A/04.jpg"] == "label_noise" and keep["nearest_identity"].iloc[4] == "B"
    assert (
        reason["/faces/C/08.jpg"] == "identity_too_small" and keep["cr_note"].iloc[8] == "singleton_identity"
    )
    assert keep["label_noise"].sum() == 1 and keep["keep"].sum() == 7

    ok = rows.iloc[:9]
    expected = classifiability(np.stack(ok["embedding"].to_numpy()), ok["identity"].to_numpy())
    for name in ("ccs", "nnccs", "cr"):
        np.testing.assert_allclose(keep[name].iloc[:9], getattr(expected, name), rtol=1e-5, atol=1e-6)
    assert keep["nearest_identity"].iloc[:9].tolist() == expected.nearest_identity.tolist()
    assert np.isnan(keep["ccs"].iloc[9]) and pd.isna(keep["nearest_identity"].iloc[9])

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["dropped_by_reason"] == {"corrupt": 1, "label_noise": 1, "identity_too_small": 1}
    assert (summary["rows"], summary["kept"], summary["identities"], summary["identities_lost"]) == (
        10,
        7,
        3,
        1,
    )
    assert summary["identities_lost_listed"] == ["C"] and result["kept"] == 7
    stats = pd.read_parquet(tmp_path / "out" / "identity_stats.parquet").set_index("identity")
    assert stats.loc["A", ["images", "images_ok", "images_kept", "dropped_label_noise"]].tolist() == [
        6,
        5,
        4,
        1,
    ]
    assert (tmp_path / "out" / "histograms.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "out" / "_froq" / "manifest.json").read_text())["job"] == "filter"

    with pytest.raises(OutputStateError, match="error_if_exists"):
        run_filter(job(tmp_path / "ann", tmp_path / "out"))
    with pytest.raises(OutputStateError, match="holds the input .*part-00000.parquet"):
        run_filter(job(tmp_path / "ann", tmp_path / "ann"))


def test_filter_cli_and_config_errors_name_keys(tmp_path: Path, capsys):
    write_annotations(tmp_path / "ann", annotation_rows(seed=1))
    config = tmp_path / "filter.yaml"
    config.write_text(
        "job: filter\nfilter:\n  annotations: nowhere\n  quality_column: cr\noutput:\n  uri: x\n"
    )
    code = main(
        [
            "filter",
            "--config",
            str(config),
            "--annotations",
            str(tmp_path / "ann"),
            "--output",
            str(tmp_path / "out"),
            "--set",
            "filter.policies.per_identity.top_k=1",
        ]
    )
    assert code == 0
    keep = pd.read_parquet(tmp_path / "out" / "keep_list.parquet")
    assert keep.groupby("identity")["keep"].sum().to_dict() == {"A": 1, "B": 1, "C": 0}  # C: CR undefined
    assert main(["filter", "--config", str(config), "--set", "filter.policies.drop_lowest_fraction=1"]) == 2
    assert "filter.policies.drop_lowest_fraction: must be < 1" in capsys.readouterr().err
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {
                "job": "filter",
                "filter": {
                    "classifiability": {"device": "tpu", "blok_rows": 2},
                    "policies": {"per_identity": {"top_k": 0}},
                },
                "output": {"uri": "o"},
            }
        )
    assert sorted(info.value.problems) == [
        "filter.annotations: required key missing",
        "filter.classifiability.blok_rows: unknown key (did you mean 'block_rows'?)",
        "filter.classifiability.device: must be one of 'auto', 'cpu' or 'cuda' (got 'tpu')",
        "filter.policies.per_identity.top_k: must be >= 1 (got 0)",
    ]


def test_shipped_filter_config_is_valid():
    from froq_ray.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[3] / "configs" / "filter.yaml", expected_job="filter")
    noise = cfg.filter.policies.label_noise
    assert isinstance(cfg, FilterJob) and (noise.ccs_floor, noise.margin, noise.drop) == (
        "preset",
        "preset",
        False,
    )
    assert cfg.filter.duplicates.enabled and cfg.filter.eval_overlap.embeddings == []


def _pairs_at(unit: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    sims = unit.astype(np.float64) @ unit.astype(np.float64).T
    return {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(sims >= threshold, k=1)), strict=True)}


def test_filter_reports_duplicates_merges_and_drops_eval_overlap(tmp_path: Path):
    """B filed under two names (a merge), one image under both (a cross-identity duplicate), and
    C in the evaluation set (dropped); every report equals a numpy brute force on the same embeddings."""
    from froq_ray.curation.centres import CentreSums, l2_normalise

    rows = annotation_rows(seed=3)
    rows.loc[6, "embedding"] = rows.loc[5, "embedding"].copy()  # B/06 is an exact copy of B_alias/05
    rows.loc[[7, 5], "identity"] = "B_alias"  # two of B's images under another name
    rows["path"] = [f"/faces/{label}/{i:02d}.jpg" for i, label in enumerate(rows["identity"])]
    write_annotations(tmp_path / "ann", rows)
    eval_rows = annotation_rows(seed=3).iloc[[8]].reset_index(drop=True)  # C's only image, as an eval image
    eval_rows["path"] = ["/bench/C.jpg"]
    write_eval = tmp_path / "bench"
    schema_rows = pd.concat([eval_rows] * 8, ignore_index=True)
    schema_rows["path"] = [f"/bench/C{i}.jpg" for i in range(8)]
    write_annotations(write_eval, schema_rows)
    cfg = job(tmp_path / "ann", tmp_path / "out")
    cfg.filter.duplicates.threshold = 0.9
    cfg.filter.identity_merges.threshold = 0.5
    cfg.filter.eval_overlap.embeddings = [str(write_eval)]
    cfg.filter.eval_overlap.threshold = 0.999
    result = run_filter(cfg)

    ok = rows.iloc[:9]
    unit = l2_normalise(np.stack(ok["embedding"].to_numpy()))
    labels = ok["identity"].to_numpy(object)
    dups = pd.read_parquet(tmp_path / "out" / "duplicates.parquet")
    expected = _pairs_at(unit, 0.9)
    paths = ok["path"].tolist()
    got = {(paths.index(a), paths.index(b)) for a, b in zip(dups["path_a"], dups["path_b"], strict=True)}
    assert got == expected and (5, 6) in got and len(dups) == len(expected)
    assert dups["same_identity"].tolist() == [labels[a] == labels[b] for a, b in sorted(got)]
    assert list(dups.columns) == ["path_a", "path_b", "identity_a", "identity_b", "same_identity", "cosine"]

    merges = pd.read_parquet(tmp_path / "out" / "identity_merges.parquet")
    table = CentreSums.from_chunk(unit, labels).table()
    sims = table.directions.astype(np.float64) @ table.directions.astype(np.float64).T
    names = table.identities
    want = {(names[a], names[b]) for a, b in zip(*np.nonzero(np.triu(sims >= 0.5, k=1)), strict=True)}
    assert set(zip(merges["identity_a"], merges["identity_b"], strict=True)) == want and len(merges) == len(
        want
    )
    assert ("B", "B_alias") in want

    overlap = pd.read_parquet(tmp_path / "out" / "eval_overlap.parquet")
    assert overlap["identity"].tolist() == ["C"] and overlap["overlap_by"].tolist() == ["centre+image"]
    assert overlap["image_path"].tolist() == ["/faces/C/08.jpg"]
    assert overlap["image_nearest_eval"].iloc[0].startswith("/bench/C")
    keep = pd.read_parquet(tmp_path / "out" / "keep_list.parquet")
    assert keep.set_index("path").loc["/faces/C/08.jpg", "reason"] == "eval_overlap"
    assert (keep["reason"] == "eval_overlap").sum() == 1

    manifest = json.loads((tmp_path / "out" / "_froq" / "manifest.json").read_text())["results"]["summary"]
    assert manifest["near_duplicates"]["pairs"] == len(expected) == result["near_duplicates"]["pairs"]
    assert manifest["identity_merges"]["pairs"] == len(want)
    assert manifest["eval_overlap"] == {
        "enabled": True,
        "threshold": 0.999,
        "identities": 1,
        "images": 1,
        "by": {"centre+image": 1},
    }
    assert manifest["thresholds"]["preset"].startswith("default")
    assert manifest["dropped_by_reason"]["eval_overlap"] == 1


def test_filter_threshold_and_preset_errors_name_the_key(tmp_path: Path):
    write_annotations(tmp_path / "ann", annotation_rows())
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {
                "job": "filter",
                "filter": {
                    "annotations": "a",
                    "duplicates": {"threshold": 1.5},
                    "identity_merges": {"threshold": "presets"},
                },
                "output": {"uri": "o"},
            }
        )
    problems = " ".join(info.value.problems)
    assert "filter.duplicates.threshold" in problems and "filter.identity_merges.threshold" in problems
    from froq_ray.pipeline.filter import FilterInputError

    cfg = job(tmp_path / "ann", tmp_path / "out")
    cfg.filter.model_preset = "no_such_model"
    with pytest.raises(FilterInputError, match="filter.model_preset: no preset for 'no_such_model'"):
        run_filter(cfg)
    cfg = job(tmp_path / "ann", tmp_path / "out2")
    cfg.filter.duplicates.threshold = -1.0
    cfg.filter.duplicates.max_pairs = 5
    with pytest.raises(FilterInputError, match="filter.duplicates.max_pairs: more than 5"):
        run_filter(cfg)
    other = annotation_rows()
    other["model_id"] = "mobilefacenet@0123"
    write_annotations(tmp_path / "other_model", other)
    mixed = annotation_rows()
    mixed["model_id"] = "dlib_resnet_v1@55533b28a958"
    write_annotations(tmp_path / "dlib", mixed)
    cfg = job(tmp_path / "dlib", tmp_path / "out4")
    cfg.filter.eval_overlap.embeddings = [str(tmp_path / "other_model")]
    with pytest.raises(FilterInputError, match="filter.eval_overlap.embeddings: embeddings of mobilefacenet"):
        run_filter(cfg)
    cfg = job(tmp_path / "dlib", tmp_path / "out5")
    cfg.filter.annotations = [str(tmp_path / "dlib"), str(tmp_path / "other_model")]
    with pytest.raises(FilterInputError, match="filter.model_preset=auto: .* 2 models"):
        run_filter(cfg)
    cfg = job(tmp_path / "ann", tmp_path / "out3")
    cfg.filter.eval_overlap.embeddings = [str(tmp_path / "nowhere")]
    with pytest.raises(FilterInputError, match="annotations not found: .*nowhere"):
        run_filter(cfg)


def test_model_presets_resolve_from_the_model_id_column(tmp_path: Path):
    from froq_ray.curation.presets import MODEL_PRESETS
    from froq_ray.pipeline.filter import annotation_files, resolve_thresholds

    rows = annotation_rows()
    rows["model_id"] = "dlib_resnet_v1@55533b28a958"
    write_annotations(tmp_path / "ann", rows)
    cfg = job(tmp_path / "ann", tmp_path / "out")
    got = resolve_thresholds(cfg, annotation_files([str(tmp_path / "ann")], {}))
    dlib = MODEL_PRESETS["dlib_resnet_v1"]
    assert got == {
        "model": "dlib_resnet_v1",
        "preset": "dlib_resnet_v1",
        "ccs_floor": dlib.ccs_floor,
        "margin": dlib.margin,
        "duplicate": dlib.duplicate,
        "merge": dlib.merge,
        "eval_overlap": dlib.eval_overlap,
    }
    cfg.filter.policies.label_noise.margin = None  # numbers and null are used as typed
    cfg.filter.duplicates.threshold = 0.5
    got = resolve_thresholds(cfg, annotation_files([str(tmp_path / "ann")], {}))
    assert (got["margin"], got["duplicate"], got["ccs_floor"]) == (None, 0.5, dlib.ccs_floor)


def test_an_existing_annotations_path_with_glob_characters_is_read_as_itself(tmp_path):
    from froq_ray.pipeline.filter import annotation_files

    for name in ("o?", "o1", "o #[2019] ?*"):
        (tmp_path / name / "_froq").mkdir(parents=True)
        pq.write_table(pa.table({"path": ["x"]}), tmp_path / name / "part-00000.parquet")  # footers are read
        (tmp_path / name / "_froq" / "part-00000.done.json").write_text("{}")
    for name in ("o?", "o #[2019] ?*"):
        files = annotation_files([str(tmp_path / name)], {})
        assert [f.path for f in files] == [str(tmp_path / name / "part-00000.parquet")]
    # a path that does not exist is a glob: o[1] matches only the folder o1
    files = annotation_files([str(tmp_path / "o[1]" / "*.parquet")], {})
    assert [f.path for f in files] == [str(tmp_path / "o1" / "part-00000.parquet")]


def test_a_percentile_floor_is_the_quality_floor_on_the_percentile_column(tmp_path: Path):
    """`quality_column: quality_percentile` + `policies.quality_floor: P` keeps images at or above the P-th
    percentile of the calibration set (the column froq annotate writes beside quality)."""
    rows = annotation_rows()
    rows["quality_percentile"] = np.linspace(95.0, 5.0, 10).astype(np.float32)
    schema = annotation_schema(DIM, ("quality_percentile",))
    folder = tmp_path / "ann"
    folder.mkdir()
    columns = {f.name: rows[f.name].tolist() if f.name in rows else [None] * len(rows) for f in schema}
    columns["embedding"] = np.stack(rows["embedding"].to_numpy())
    pq.write_table(to_table(columns, schema), folder / "part-00000.parquet")
    cfg = job(folder, tmp_path / "out", quality_floor=40.0)
    cfg.filter.quality_column = "quality_percentile"
    run_filter(cfg)
    keep = pd.read_parquet(tmp_path / "out" / "keep_list.parquet")
    below = rows["quality_percentile"].iloc[:9] < 40.0  # ok rows under the floor (row 9 is corrupt)
    reasons = keep["reason"].iloc[:9]
    assert (reasons[below] == "quality_floor").all() and below.sum() == 3
    assert not keep["keep"].iloc[:9][below].any()


def test_resume_of_a_finished_filter_run_does_nothing_and_a_changed_input_recomputes(tmp_path):
    rows = annotation_rows()
    write_annotations(tmp_path / "ann", rows)
    resume = job(tmp_path / "ann", tmp_path / "out", "resume", min_identity_images=2)
    first = run_filter(resume)
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]
    assert run_filter(resume) == first  # the finished run's summary, nothing rewritten
    assert [p.stat().st_mtime_ns for p in files] == stamps
    shutil.rmtree(tmp_path / "ann")
    write_annotations(tmp_path / "ann", rows.iloc[:9].reset_index(drop=True))  # the corrupt row is gone
    again = run_filter(resume)
    assert (again["rows"], first["rows"]) == (9, 10)
    assert len(pd.read_parquet(tmp_path / "out" / "keep_list.parquet")) == 9


def test_a_path_in_two_annotation_folders_is_refused_naming_it(tmp_path: Path):
    from froq_ray.pipeline.filter import FilterInputError

    rows = annotation_rows()
    write_annotations(tmp_path / "a", rows)
    more = annotation_rows(seed=1)
    more["path"] = more["path"].str.replace("/faces/", "/more/")
    more.loc[[2, 8], "path"] = rows["path"].iloc[[3, 7]].to_numpy()  # two of a's images again, in b
    write_annotations(tmp_path / "b", more)
    cfg = job(tmp_path / "a", tmp_path / "out")
    cfg.filter.annotations = [str(tmp_path / "a"), str(tmp_path / "b")]
    with pytest.raises(FilterInputError) as info:
        run_filter(cfg)
    assert str(info.value) == (
        f"2 path(s) appear more than once across the annotations, e.g. {rows['path'].iloc[3]}"
    )
    assert not (tmp_path / "out" / "keep_list.parquet").exists()
