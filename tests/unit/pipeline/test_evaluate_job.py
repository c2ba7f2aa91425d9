"""`froq evaluate` on small annotation outputs written here: its EDC numbers against a brute-force recount, the
one-line refusals (no identities, one identity, no genuine pairs, wrong columns) and the three output modes."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from froq_ray.cli import main
from froq_ray.storage.schema import annotation_schema, to_table

DIM = 8
IDENTITIES = ["Ada", "Bob", "Cy", "Dee"]
PER_IDENTITY = 4


def write_annotations(
    folder: Path, identities: list[str | None], seed: int = 0, status: list[str] | None = None
) -> dict[str, np.ndarray]:
    """One part file in the annotate schema: clustered float32 embeddings, distinct float32 qualities."""
    rng = np.random.default_rng(seed)
    n = len(identities)
    labels = sorted({i for i in identities if i is not None})
    centres = {name: rng.normal(size=DIM) for name in labels}
    emb = np.stack([(centres[i] if i is not None else 0) + 0.9 * rng.normal(size=DIM) for i in identities])
    emb = emb.astype(np.float32)
    quality = rng.permutation(np.linspace(10.0, 50.0, n)).astype(np.float32)
    columns = {
        "path": [f"/faces/{i or 'unknown'}/{k:03d}.jpg" for k, i in enumerate(identities)],
        "identity": list(identities),
        "status": status or ["ok"] * n,
        "error": [None] * n,
        "quality": quality,
        "embedding": emb,
        "width": np.full(n, 112, np.int32),
        "height": np.full(n, 112, np.int32),
        "model_id": ["m"] * n,
        "calibration_id": ["c"] * n,
    }
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(columns, annotation_schema(DIM)), folder / "part-00000.parquet")
    return {"embedding": emb, "quality": quality}


def labelled() -> list[str]:
    return [name for name in IDENTITIES for _ in range(PER_IDENTITY)]


def evaluate(capsys, ann: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["evaluate", "--annotations", str(ann), "--output", str(out), *extra])
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("froq evaluate: error: ")
    return lines[0]


def refusal(capsys, tmp_path: Path, *extra: str) -> str:
    """The one error line of ``froq evaluate`` of ``tmp_path/ann`` into ``tmp_path/ev`` with ``extra``
    arguments, checked to be a one-line refusal (exit 2, no traceback)."""
    return one_line_error(*evaluate(capsys, tmp_path / "ann", tmp_path / "ev", *extra))


# ------------------------------------------------------------------------------------------ the numbers


def brute_force_edc(emb: np.ndarray, ids: list[str], q: np.ndarray, fmr: Fraction, limits=(0.2, 0.3)) -> dict:
    """The EDC of docs/evaluation-protocol.md recounted pair by pair: pairs in (i, j) order, stable sort by
    min quality, fixed threshold, grid step 0.05, step integration, normalised by L * FNMR(0)."""
    unit = emb.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    pairs = list(itertools.combinations(range(len(ids)), 2))
    sim = [float(unit[i] @ unit[j]) for i, j in pairs]
    gen = [ids[i] == ids[j] for i, j in pairs]
    pq_ = [min(float(q[i]), float(q[j])) for i, j in pairs]
    impostors = sorted((s for s, g in zip(sim, gen, strict=True) if not g), reverse=True)
    k = int(fmr * len(impostors))  # floor: accept at most k impostors
    tau = np.nextafter(impostors[k], np.inf)
    order = sorted(range(len(pairs)), key=lambda p: pq_[p])  # Python's sort is stable
    grid = [Fraction(m, 20) for m in range(7)]  # 0, 0.05, ..., 0.3
    fnmr = []
    for d in grid:
        kept = order[int(d * len(pairs)) :]
        kept_gen = [p for p in kept if gen[p]]
        fnmr.append(sum(sim[p] < tau for p in kept_gen) / len(kept_gen))
    out = {"tau": tau, "fnmr0": fnmr[0], "n_genuine": sum(gen), "n_impostor": len(impostors)}
    for limit in limits:
        top = Fraction(str(limit))  # 0.3 as the decimal it reads as (the float 0.3 is below 3/10)
        area = sum(fnmr[i] * float(grid[i + 1] - grid[i]) for i in range(len(grid) - 1) if grid[i + 1] <= top)
        out[f"pauc@{limit:g}"] = area / (limit * fnmr[0])
        out[f"pauc_raw@{limit:g}"] = area
    return out


def test_edc_table_matches_a_pair_by_pair_recount(capsys, tmp_path):
    ids = labelled()
    data = write_annotations(tmp_path / "ann", ids)
    code, err = evaluate(capsys, tmp_path / "ann", tmp_path / "ev", "--set", "evaluate.fmr=0.1")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "ev" / "edc.csv")
    expected = brute_force_edc(data["embedding"], ids, data["quality"], Fraction(1, 10))
    row = table.iloc[0]
    assert row["method"] == "quality"
    assert (
        (row["n_genuine"], row["n_impostor"]) == (24, 96) == (expected["n_genuine"], expected["n_impostor"])
    )
    assert expected["fnmr0"] > 0  # the areas are normalised by it
    for key in ("tau", "fnmr0", "pauc@0.2", "pauc@0.3", "pauc_raw@0.2", "pauc_raw@0.3"):
        assert row[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    assert (tmp_path / "ev" / "edc.png").stat().st_size > 0
    assert "| quality |" in (tmp_path / "ev" / "edc.md").read_text()


# --------------------------------------------------------------------------------- one-line refusals


def test_no_identities_says_how_to_provide_them(capsys, tmp_path):
    write_annotations(tmp_path / "ann", [None] * 8)
    line = refusal(capsys, tmp_path)
    assert f"{tmp_path / 'ann'} has no identities (column 'identity' is null in all 8 ok rows)" in line
    assert "--set input.identity_from_folder=true" in line and "--set evaluate.identity_source=folder" in line
    assert not (tmp_path / "ev" / "edc.csv").exists()


def test_some_rows_without_identity_are_counted_and_named(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled()[:-2] + [None, None])
    line = refusal(capsys, tmp_path)
    assert "2 of 16 ok rows have no 'identity' (first: /faces/unknown/014.jpg)" in line


def test_folder_identities_need_no_identity_column(capsys, tmp_path):
    write_annotations(tmp_path / "ann", [None] * 4 + labelled()[4:])
    # paths are /faces/<identity or 'unknown'>/k.jpg: four identities by folder
    code, err = evaluate(
        capsys, tmp_path / "ann", tmp_path / "ev", "--set", "evaluate.identity_source=folder"
    )
    assert code == 0, err
    assert pd.read_csv(tmp_path / "ev" / "edc.csv")["n_genuine"].tolist() == [24]


def test_one_identity_means_no_impostor_pairs(capsys, tmp_path):
    write_annotations(tmp_path / "ann", ["Ada"] * 5)
    line = refusal(capsys, tmp_path)
    assert "all 5 ok images have one identity ('Ada'), so there are no impostor pairs" in line


def test_one_image_per_identity_means_no_genuine_pairs(capsys, tmp_path):
    write_annotations(tmp_path / "ann", IDENTITIES)
    line = refusal(capsys, tmp_path)
    assert "each of the 4 identities has one ok image, so there are no genuine pairs" in line


def test_unknown_quality_column_lists_only_the_annotation_numeric_columns(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled())
    line = refusal(capsys, tmp_path, "--set", "evaluate.quality_columns=[nope]")
    part = tmp_path / "ann" / "part-00000.parquet"
    assert line == (
        f"froq evaluate: error: evaluate.quality_columns: 'nope' is not a column of {part}; its numeric columns: "
        "quality, width, height"
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param(
            "evaluate.quality_columns=[qualty]",
            ["'qualty' is not a column of", "(did you mean 'quality'?)"],
            id="misspelt_quality_column_gets_the_closest_name",
        ),
        pytest.param(
            "evaluate.quality_columns=[model_id]",
            ["'model_id' is not numeric"],
            id="text_column_is_not_a_quality",
        ),
        pytest.param(
            "evaluate.identity_column=identiy",
            ["evaluate.identity_column: 'identiy' is not a column", "did you mean 'identity'"],
            id="misspelt_identity_column_gets_the_closest_name",
        ),
    ],
)
def test_a_bad_column_setting_is_refused_naming_it(capsys, tmp_path, setting, expected):
    write_annotations(tmp_path / "ann", labelled())
    line = refusal(capsys, tmp_path, "--set", setting)
    assert [part for part in expected if part not in line] == [], line


def test_null_quality_of_an_ok_row_is_refused_with_its_path(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled())
    part = tmp_path / "ann" / "part-00000.parquet"
    table = pq.read_table(part)
    quality = table.column("quality").to_pylist()
    quality[3] = None
    table = table.set_column(table.schema.get_field_index("quality"), "quality", [quality])
    pq.write_table(table.cast(annotation_schema(DIM)), part)
    line = refusal(capsys, tmp_path)
    assert "'quality' is null, NaN or infinite in 1 ok rows (first: /faces/Ada/003.jpg)" in line


# --------------------------------------------------------------------------------------------- --mode


def files_below(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file below ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_error_if_exists_refuses_an_earlier_evaluation_and_keeps_it(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled())
    assert evaluate(capsys, tmp_path / "ann", tmp_path / "ev")[0] == 0
    before = files_below(tmp_path / "ev")
    assert sorted(before) == [
        "_froq/manifest.json",
        "_froq/run.json",
        "edc.csv",
        "edc.md",
        "edc.png",
        "thresholds.csv",
    ]
    line = refusal(capsys, tmp_path, "--mode", "error_if_exists")
    assert (
        f"output {tmp_path / 'ev'} already holds edc.md, edc.csv, edc.png, thresholds.csv, _froq/manifest.json "
        "and 1 more and output.mode is error_if_exists" in line
    )
    assert files_below(tmp_path / "ev") == before


def test_error_if_exists_on_an_empty_output_runs(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled())
    code, err = evaluate(capsys, tmp_path / "ann", tmp_path / "ev", "--mode", "error_if_exists")
    assert code == 0, err
    assert (tmp_path / "ev" / "edc.csv").is_file()


def test_resume_of_the_finished_evaluation_does_nothing(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled(), seed=0)
    assert evaluate(capsys, tmp_path / "ann", tmp_path / "ev")[0] == 0
    files = sorted(p for p in (tmp_path / "ev").rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]
    (tmp_path / "ev" / "notes.txt").write_text("mine")
    code, err = evaluate(capsys, tmp_path / "ann", tmp_path / "ev", "--mode", "resume")
    assert code == 0, err
    assert [p.stat().st_mtime_ns for p in files] == stamps  # nothing rewritten
    assert (tmp_path / "ev" / "notes.txt").read_text() == "mine"


def test_resume_recomputes_and_replaces(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled(), seed=0)
    assert evaluate(capsys, tmp_path / "ann", tmp_path / "ev")[0] == 0
    first = pd.read_csv(tmp_path / "ev" / "edc.csv")
    data = write_annotations(tmp_path / "ann", labelled(), seed=1)  # new annotations, same place
    code, err = evaluate(
        capsys, tmp_path / "ann", tmp_path / "ev", "--mode", "resume", "--set", "evaluate.fmr=0.1"
    )
    assert code == 0, err
    second = pd.read_csv(tmp_path / "ev" / "edc.csv")
    expected = brute_force_edc(data["embedding"], labelled(), data["quality"], Fraction(1, 10))
    assert second["tau"].iloc[0] == pytest.approx(expected["tau"], rel=1e-12)
    assert second["tau"].iloc[0] != first["tau"].iloc[0]


def test_overwrite_deletes_the_earlier_files_first(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled())
    assert evaluate(capsys, tmp_path / "ann", tmp_path / "ev")[0] == 0
    elsewhere = tmp_path / "plots" / "edc.png"
    elsewhere.parent.mkdir()
    code, err = evaluate(
        capsys,
        tmp_path / "ann",
        tmp_path / "ev",
        "--mode",
        "overwrite",
        "--set",
        f"evaluate.plot={elsewhere}",
    )
    assert code == 0, err
    # the earlier plot in the output is gone (this run's plot went elsewhere); the rest was rewritten
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [
        "_froq",
        "edc.csv",
        "edc.md",
        "thresholds.csv",
    ]
    assert elsewhere.stat().st_size > 0


def test_an_annotate_output_is_never_an_evaluate_output(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled())
    for mode in ("resume", "overwrite"):
        line = one_line_error(*evaluate(capsys, tmp_path / "ann", tmp_path / "ann", "--mode", mode))
        assert f"holds the input {tmp_path / 'ann' / 'part-00000.parquet'}" in line
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["part-00000.parquet"]


def test_evaluate_help_says_what_each_mode_does(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "resume (default) does nothing when the output holds the finished evaluation" in text
    assert "overwrite deletes the earlier files first" in text and "error_if_exists refuses" in text


def test_threshold_table_is_written_with_the_percentile_threshold(capsys, tmp_path):
    from froq_ray.evaluation.thresholds import pairs_of, threshold_table

    ids = labelled()
    data = write_annotations(tmp_path / "ann", ids)
    table = pq.read_table(tmp_path / "ann" / "part-00000.parquet")
    percentile = (np.argsort(np.argsort(data["quality"])) * 100.0 / len(ids)).astype(np.float32)
    schema = annotation_schema(DIM, ("quality_percentile",))
    pq.write_table(
        to_table({**table.to_pydict(), "quality_percentile": percentile}, schema),
        tmp_path / "ann" / "part-00000.parquet",
    )
    code, err = evaluate(capsys, tmp_path / "ann", tmp_path / "ev", "--set", "evaluate.fmr=0.1")
    assert code == 0, err
    got = pd.read_csv(tmp_path / "ev" / "thresholds.csv")
    i, j, s, g = pairs_of(data["embedding"], ids)
    expected = threshold_table(data["quality"], i, j, s, genuine=g, percentile=percentile, fmr=0.1)
    assert list(got["method"]) == ["quality"] * 5 and list(got["drop_fraction"]) == [
        0.01,
        0.05,
        0.1,
        0.2,
        0.3,
    ]
    for column in (
        "quality_threshold",
        "percentile_threshold",
        "dropped_fraction",
        "genuine_pairs_kept",
        "fnmr",
    ):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-6, err_msg=column)
    # 16 images: dropping 20 % cuts at the 4th lowest quality, its percentile is 3/16
    assert got["percentile_threshold"].iloc[3] == pytest.approx(300 / 16)
