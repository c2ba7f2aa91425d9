"""`froq evaluate --scores`: another tool's scores joined by exact path and evaluated beside ``quality``; the
join counted against a plain-Python recount, the one-line refusals of bad score files."""

from __future__ import annotations

import json
import os
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from froq_ray.cli import main
from froq_ray.evaluation.external import ScoreFileError, join_scores, read_scores
from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)
from tests.unit.pipeline.test_evaluate_job import brute_force_edc, labelled, refusal, write_annotations


def other_tool_csv(path, rows: list[tuple[str, str, str]]) -> None:
    path.write_text("path,ser_fiq,blur\n" + "".join(f"{p},{a},{b}\n" for p, a, b in rows))


def evaluate_with_other_tool(capsys, tmp_path, *settings: str) -> tuple[str, pd.DataFrame]:
    """``froq evaluate`` of ``tmp_path/ann`` with ``--scores tmp_path/other.csv`` into ``tmp_path/ev``, one
    ``--set`` per setting; checks that it succeeded and returns its log (stdout) and edc.csv by method."""
    sets = [arg for setting in settings for arg in ("--set", setting)]
    code = main(
        [
            "evaluate",
            "--annotations",
            str(tmp_path / "ann"),
            "--output",
            str(tmp_path / "ev"),
            "--scores",
            str(tmp_path / "other.csv"),
            *sets,
        ]
    )
    log = capsys.readouterr().out  # the CLI logs to stdout
    assert code == 0, log
    return log, pd.read_csv(tmp_path / "ev" / "edc.csv").set_index("method")


def test_external_scores_are_evaluated_beside_quality_over_the_same_pairs(capsys, tmp_path):
    ids = labelled()
    data = write_annotations(tmp_path / "ann", ids)
    paths = [f"/faces/{i}/{k:03d}.jpg" for k, i in enumerate(ids)]
    rng = np.random.default_rng(5)
    ser = rng.permutation(16).astype(float) / 7
    blur = rng.normal(size=16)
    # row 5 has no score; one score row names an image that is not annotated, one differs only by case
    rows = [(p, repr(float(ser[k])), repr(float(blur[k]))) for k, p in enumerate(paths) if k != 5]
    rows += [("/faces/Zed/000.jpg", "0.5", "1"), (paths[5].upper(), "0.1", "2")]
    other_tool_csv(tmp_path / "other.csv", rows)
    log, table = evaluate_with_other_tool(
        capsys, tmp_path, "evaluate.fmr=0.1", "evaluate.lower_is_better=[blur]", "evaluate.bootstrap=0"
    )
    assert list(table.index) == ["quality", "ser_fiq", "blur"]
    keep = [k for k in range(16) if k != 5]
    sub_ids = [ids[k] for k in keep]
    emb = data["embedding"][keep]
    for method, q in (("quality", data["quality"][keep]), ("ser_fiq", ser[keep]), ("blur", -blur[keep])):
        expected = brute_force_edc(emb, sub_ids, q, Fraction(1, 10))
        row = table.loc[method]
        assert (
            (row["n_genuine"], row["n_impostor"])
            == (expected["n_genuine"], expected["n_impostor"])
            == (21, 84)
        )
        for key in ("tau", "fnmr0", "pauc@0.2", "pauc@0.3", "pauc_raw@0.2", "pauc_raw@0.3"):
            assert row[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), (method, key)
    manifest = json.loads((tmp_path / "ev" / "_froq" / "manifest.json").read_text())
    scores = manifest["results"]["scores"]
    uri = str(tmp_path / "other.csv")
    assert scores["images_evaluated"] == manifest["results"]["images"] == 15
    assert scores["annotation_rows_without_score"][uri] == {"count": 1, "first": [paths[5]]}
    assert scores["score_rows_without_annotation"][uri] == {
        "count": 2,
        "first": ["/faces/Zed/000.jpg", paths[5].upper()],
    }
    skipped = pd.read_csv(tmp_path / "ev" / "skipped_scores.csv")
    assert skipped.values.tolist() == [
        [uri, "no_score", paths[5]],
        [uri, "no_annotation", "/faces/Zed/000.jpg"],
        [uri, "no_annotation", paths[5].upper()],
    ]
    assert f"1 ok annotation rows have no score in {uri} (skipped; first: {paths[5]})" in log
    assert f"2 score rows match no annotation row in {uri} (skipped; first: /faces/Zed/000.jpg" in log


def test_join_counts_match_a_set_recount(tmp_path):
    rng = np.random.default_rng(1)
    ann = np.array([f"a/{k}.jpg" for k in rng.permutation(40)], dtype=object)
    not_ok = ["a/x.jpg"]
    pool = [f"a/{k}.jpg" for k in range(30, 55)] + not_ok
    chosen = [pool[k] for k in rng.permutation(len(pool))]
    values = rng.normal(size=len(chosen))
    pd.DataFrame({"path": chosen, "s": values}).to_parquet(tmp_path / "s.parquet")
    joined = join_scores(ann, [read_scores(str(tmp_path / "s.parquet"))], ("quality",), not_ok)
    by_path = dict(zip(chosen, values, strict=True))
    expected_keep = [p in by_path for p in ann]
    assert joined.keep.tolist() == expected_keep
    assert joined.scores["s"].tolist() == [by_path[p] for p in ann if p in by_path]
    uri = str(tmp_path / "s.parquet")
    assert joined.missing[uri] == [p for p in ann if p not in by_path]
    assert joined.unmatched[uri] == [p for p in chosen if p not in set(ann) and p not in not_ok]
    assert joined.not_ok[uri] == not_ok


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,s\na.jpg,1\nb.jpg,oops\n", "column 's' row 2 (path 'b.jpg') is 'oops', not a finite number"),
        ("path,s\na.jpg,1\nb.jpg,\n", "column 's' row 2 (path 'b.jpg') is '', not a finite number"),
        ("path,s\na.jpg,nan\nb.jpg,2\n", "column 's' row 1 (path 'a.jpg') is 'nan', not a finite number"),
        ("path,s\na.jpg,1\na.jpg,2\n", "column 'path' row 2 repeats path 'a.jpg' of row 1"),
        ("file,s\na.jpg,1\n", "has no 'path' column (columns: file, s)"),
        ("path\na.jpg\n", "has no score column besides 'path'"),
    ],
)
def test_bad_score_files_are_refused_on_one_line(capsys, tmp_path, text, message):
    write_annotations(tmp_path / "ann", labelled())
    (tmp_path / "bad.csv").write_text(text)
    line = refusal(capsys, tmp_path, "--scores", str(tmp_path / "bad.csv"))
    assert f"evaluate.scores: {tmp_path / 'bad.csv'} " in line and message in line


def test_parquet_nan_score_and_clashing_names_are_refused(capsys, tmp_path):
    write_annotations(tmp_path / "ann", labelled())
    paths = [f"/faces/{i}/{k:03d}.jpg" for k, i in enumerate(labelled())]
    pd.DataFrame({"path": paths, "s": [1.0] * 3 + [np.nan] + [2.0] * 12}).to_parquet(tmp_path / "nan.parquet")
    line = refusal(capsys, tmp_path, "--scores", str(tmp_path / "nan.parquet"))
    assert f"column 's' row 4 (path '{paths[3]}') is null, not a finite number" in line
    pq.write_table(pa.table({"path": paths, "s": pa.array([2.0] * 15 + [np.inf])}), tmp_path / "inf.parquet")
    line = refusal(capsys, tmp_path, "--scores", str(tmp_path / "inf.parquet"))
    assert f"column 's' row 16 (path '{paths[15]}') is inf, not a finite number" in line
    pd.DataFrame({"path": paths, "quality": 1.0}).to_parquet(tmp_path / "q.parquet")
    line = refusal(capsys, tmp_path, "--scores", str(tmp_path / "q.parquet"))
    assert "column 'quality' has the name of an evaluated quality column" in line
    pd.DataFrame({"path": paths, "s": 1.0}).to_parquet(tmp_path / "s.parquet")
    pd.DataFrame({"path": paths, "s": 2.0}).to_parquet(tmp_path / "s2.parquet")
    line = refusal(
        capsys, tmp_path, "--scores", str(tmp_path / "s.parquet"), "--scores", str(tmp_path / "s2.parquet")
    )
    assert f"column 's' is in both {tmp_path / 's.parquet'} and {tmp_path / 's2.parquet'}" in line
    line = refusal(
        capsys, tmp_path, "--scores", str(tmp_path / "s.parquet"), "--set", "evaluate.lower_is_better=[t]"
    )
    assert "evaluate.lower_is_better: 't' is not an evaluated column" in line


def test_evaluate_writes_the_band_the_reference_curves_and_the_small_sample_warning(capsys, tmp_path):
    ids = labelled()
    write_annotations(tmp_path / "ann", ids)
    paths = [f"/faces/{i}/{k:03d}.jpg" for k, i in enumerate(ids)]
    other_tool_csv(tmp_path / "other.csv", [(p, str(k % 7), str(-k)) for k, p in enumerate(paths)])
    log, table = evaluate_with_other_tool(capsys, tmp_path, "evaluate.fmr=0.1", "evaluate.bootstrap=40")
    manifest = json.loads((tmp_path / "ev" / "_froq" / "manifest.json").read_text())["results"]
    for method in ("quality", "ser_fiq", "blur"):
        row = table.loc[method]
        for limit in ("0.2", "0.3"):
            assert row[f"pauc_lo@{limit}"] <= row[f"pauc@{limit}"] <= row[f"pauc_hi@{limit}"]
        curve = manifest["curves"][method]
        assert curve["random"] == row["fnmr0"] and len(curve["fnmr_lo"]) == len(curve["discard"]) == 7
        n_fnm = round(row["fnmr0"] * row["n_genuine"])  # 24 genuine pairs: the ideal reaches 0 at 24 * d >= F
        removed = [int(Fraction(k, 20) * 120) for k in range(7)]
        assert curve["ideal"] == [max(0, n_fnm - m) / (24 - min(m, n_fnm)) for m in removed]
    assert manifest["bootstrap"]["replicates"] == 40
    warnings = manifest["warnings"]
    assert any(line.startswith("quality: only ") for line in warnings)
    markdown = (tmp_path / "ev" / "edc.md").read_text()
    assert all(f"> **Warning:** {line}" in markdown for line in warnings)
    assert all(f"WARNING froq_ray: small sample: {line}" in log for line in warnings)
    assert "95% band lo@0.2" in markdown


def test_a_changed_score_file_is_evaluated_again_on_resume(capsys, tmp_path):
    ids = labelled()
    write_annotations(tmp_path / "ann", ids)
    paths = [f"/faces/{i}/{k:03d}.jpg" for k, i in enumerate(ids)]
    csv = tmp_path / "other.csv"
    settings = ("evaluate.fmr=0.1", "evaluate.bootstrap=0")
    other_tool_csv(csv, [(p, str(k), "0") for k, p in enumerate(paths)])
    first = evaluate_with_other_tool(capsys, tmp_path, *settings)[1].loc["ser_fiq", "pauc_raw@0.3"]
    other_tool_csv(csv, [(p, str(-k), "0") for k, p in enumerate(paths)])  # the opposite order
    os.utime(csv, ns=(os.stat(csv).st_atime_ns, os.stat(csv).st_mtime_ns + 10**9))
    second = evaluate_with_other_tool(capsys, tmp_path, *settings)[1].loc["ser_fiq", "pauc_raw@0.3"]
    expected = brute_force_edc(
        write_annotations(tmp_path / "ann2", ids)["embedding"], ids, -np.arange(16.0), Fraction(1, 10)
    )
    assert second == pytest.approx(expected["pauc_raw@0.3"], rel=1e-12) and second != first


def test_categorical_paths_and_integer_scores_of_a_parquet_file(tmp_path):
    paths = ["b.jpg", "a.jpg", "c.jpg"]
    pd.DataFrame({"path": pd.Categorical(paths), "n": np.array([3, 1, 2], np.int16)}).to_parquet(
        tmp_path / "s.parquet"
    )
    scores = read_scores(str(tmp_path / "s.parquet"))
    assert scores.paths.tolist() == paths and scores.columns["n"].tolist() == [3.0, 1.0, 2.0]
    joined = join_scores(np.array(["a.jpg", "b.jpg", "d.jpg"], dtype=object), [scores])
    assert joined.keep.tolist() == [True, True, False] and joined.scores["n"].tolist() == [1.0, 3.0]


def test_annotations_with_a_repeated_path_cannot_be_joined(tmp_path):
    pd.DataFrame({"path": ["a.jpg"], "s": [1.0]}).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(ScoreFileError, match=r"the annotations hold path 'b.jpg' twice \(ok rows 2 and 4\)"):
        join_scores(
            np.array(["a.jpg", "b.jpg", "c.jpg", "b.jpg"], dtype=object),
            [read_scores(str(tmp_path / "s.parquet"))],
        )


def test_score_files_are_read_from_s3(s3):  # noqa: F811 - the s3 fixture imported above
    fs = s3.filesystem()
    fs.pipe(f"{s3.bucket}/tools/other.csv", b"path,ser_fiq\ns3://b/x/1.jpg,0.25\ns3://b/x/2.jpg,0.75\n")
    scores = read_scores(s3.uri("tools/other.csv"), s3.storage_options)
    assert scores.paths.tolist() == ["s3://b/x/1.jpg", "s3://b/x/2.jpg"]
    assert scores.columns["ser_fiq"].tolist() == [0.25, 0.75]
    with pytest.raises(ScoreFileError, match=r"tools/missing.csv does not exist"):
        read_scores(s3.uri("tools/missing.csv"), s3.storage_options)
