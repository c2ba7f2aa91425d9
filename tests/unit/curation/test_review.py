"""froq review: the selections against independent pandas/numpy/scipy computations, and the job end to end on real
JPEGs + a real filter output (page parsed with html.parser: tiles per section = the filter output's counts;
unreadable images are placeholder tiles and counted skips; output.mode; S3 through the moto server)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import percentileofscore

from froq_ray.cli import main
from froq_ray.config import ConfigError, load_config
from froq_ray.curation import review as sel
from froq_ray.curation.review_page import Section, Tile, contact_sheets
from froq_ray.pipeline.review import DUPLICATES, MERGES, ReviewInputError, run_review
from froq_ray.storage.run_state import OutputStateError
from tests.review_data import (
    MERGES as MERGE_ROWS,
)
from tests.review_data import (
    UNSHOWABLE,
    ReviewPage,
    add_duplicates_and_merges,
    annotation_frame,
    filtered_inputs,
    review_job,
    run_filter_on,
    write_annotations,
    write_images,
)


# ------------------------------------------------------------------------------------------------ selections
def random_table(seed: int = 0, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    quality = np.round(rng.normal(size=n), 1)  # many ties
    quality[rng.random(n) < 0.05] = np.nan
    status = rng.choice(np.array(["ok"] * 8 + ["corrupt", "read_error"]), n)
    paths = [f"/d/id{rng.integers(25)}/{i:04d}.jpg" for i in rng.permutation(n)]
    frame = pd.DataFrame(
        {"path": paths, "status": status, "quality": quality, "identity": [p.split("/")[2] for p in paths]}
    )
    usable = (frame.status == "ok") & frame.quality.notna()
    frame["percentile"] = np.where(usable, sel.dataset_percentile(frame.quality.where(usable)), np.nan)
    return frame


def scored_by_path(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame.status == "ok") & frame.quality.notna()].sort_values("path")


def test_lowest_and_highest_match_pandas_nsmallest_nlargest():
    frame = random_table()
    usable = scored_by_path(frame)  # ties resolved by path: nsmallest/nlargest keep the first occurrence
    for n in (1, 17, 60, 10_000):
        assert (
            sel.lowest(frame, n)["path"].tolist()
            == usable.nsmallest(n, "quality", keep="first")["path"].tolist()
        )
        assert (
            sel.highest(frame, n)["path"].tolist()
            == usable.nlargest(n, "quality", keep="first")["path"].tolist()
        )
    assert len(sel.lowest(frame, 10_000)) == len(usable) and sel.lowest(frame, 0).empty


def test_dataset_percentile_is_scipys_strict_percentile_of_score():
    frame = random_table(1)
    usable = scored_by_path(frame)
    expected = [percentileofscore(usable.quality, q, kind="strict") for q in usable.quality]
    np.testing.assert_allclose(usable.percentile, expected, rtol=0, atol=1e-9)
    assert frame.loc[frame.status != "ok", "percentile"].isna().all()
    assert np.isnan(sel.dataset_percentile(np.array([np.nan, 1.0]))[0])


@pytest.mark.parametrize("count,per_band", [(10, 7), (4, 1), (3, 500)])
def test_bands_hold_the_rows_of_their_percentile_range(count, per_band):
    frame = random_table(2)
    usable = scored_by_path(frame)
    bands = sel.bands(frame, count, per_band)
    assert [b.index for b in bands] == list(range(count))
    assert sum(b.total for b in bands) == len(usable)
    for band in bands:
        low, high = 100 * band.index / count, 100 * (band.index + 1) / count
        members = usable[(usable.percentile >= low) & (usable.percentile < high)]
        members = members.sort_values(["quality", "path"], kind="stable")
        assert (band.low, band.high, band.total) == pytest.approx((low, high, len(members)))
        assert len(band.rows) == min(per_band, len(members))
        assert set(band.rows.path) <= set(members.path)
        assert band.rows.path.tolist() == [p for p in members.path if p in set(band.rows.path)]  # in order
        if len(members) and per_band > 1:
            assert (
                band.rows.path.iloc[0] == members.path.iloc[0]
                and band.rows.path.iloc[-1] == members.path.iloc[-1]
            )


def test_bands_of_a_given_percentile_column_put_100_in_the_last_band_and_skip_nan():
    frame = pd.DataFrame(
        {
            "path": list("abcdef"),
            "status": ["ok"] * 6,
            "quality": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "identity": ["x"] * 6,
            "percentile": [0.0, 9.99, 10.0, 99.5, 100.0, np.nan],
        }
    )
    bands = sel.bands(frame, 10, 5)
    assert bands[0].rows.path.tolist() == ["a", "b"] and bands[1].rows.path.tolist() == ["c"]
    assert bands[9].rows.path.tolist() == ["d", "e"] and sum(b.total for b in bands) == 5


def test_label_noise_groups_show_own_and_nearest_identity_samples():
    frame = pd.DataFrame(
        {
            "path": [f"/{i}" for i in range(9)],
            "identity": ["A", "A", "A", "A", "B", "B", "B", "C", "A"],
            "status": ["ok"] * 8 + ["corrupt"],
            "quality": [0.5, 0.9, 0.9, 0.1, 0.3, 0.8, 0.2, 0.4, np.nan],
            "label_noise": [True, False, False, False, True, False, False, False, False],
            "ccs": [0.1, 0.5, 0.5, 0.5, 0.05, 0.5, 0.5, np.nan, np.nan],
            "nearest_identity": ["B", "B", "B", "B", "C", "A", "A", "A", None],
        }
    )
    groups = sel.label_noise_groups(frame, samples=2)
    assert [g.subjects.path.tolist() for g in groups] == [["/4"], ["/0"]]  # lowest CCS first
    assert groups[0].samples["own"].path.tolist() == ["/5", "/6"]  # B without itself, best first
    # /4 (0.3, flagged) ranks after the unflagged /6 (0.2) as a sample of B
    assert groups[0].samples["nearest"].path.tolist() == ["/7"]
    assert groups[1].samples["own"].path.tolist() == ["/1", "/2"]  # ties of 0.9 by path; /8 is not ok
    assert groups[1].samples["nearest"].path.tolist() == ["/5", "/6"]
    assert len(sel.label_noise_groups(frame, samples=2, limit=1)) == 1


def test_pairs_are_ordered_by_cosine_and_a_missing_path_is_still_shown():
    frame = random_table(3)
    paths = frame.path.tolist()
    dups = pd.DataFrame(
        {
            "path_a": paths[:3],
            "path_b": [paths[3], "/not/annotated.jpg", paths[5]],
            "cosine": [0.9, 0.99, 0.95],
        }
    )
    groups = sel.duplicate_pairs(frame, dups)
    assert [g.cosine for g in groups] == [0.99, 0.95, 0.9]
    assert groups[0].subjects.path.tolist() == [paths[1], "/not/annotated.jpg"]
    assert (
        groups[0].subjects.status.tolist()[1] == "unknown"
        and len(sel.duplicate_pairs(frame, dups, limit=2)) == 2
    )
    merges = sel.merge_groups(
        frame, pd.DataFrame({"identity_a": ["id1", "id2"], "identity_b": ["id3", "id4"]}), 3
    )
    assert [g.identities for g in merges] == [("id1", "id3"), ("id2", "id4")]  # no cosine: by identities
    assert all(
        len(g.samples["a"]) == 3 and (g.samples["a"].identity == g.identities[0]).all() for g in merges
    )


def test_contact_sheets_pack_groups_and_split_into_files():
    image = Image.new("RGB", (16, 16), (10, 200, 30))
    tiles = [
        [Tile(f"/{g}/{i}", ("a", "b", "c"), "subject", image if i else None) for i in range(g + 1)]
        for g in range(6)
    ]
    section = Section("x", "X", "", tiles, 6)
    sheets = contact_sheets(section, 16, columns=4, max_rows=2)
    # groups of 1..6 tiles in rows of 4: [1,2] [3] [4] [5 -> 4+1] [6 -> 4+2] = 7 rows -> 4 sheets of <= 2 rows
    assert len(sheets) == 4
    heights = [Image.open(io.BytesIO(s)).size[1] for s in sheets]
    assert heights[0] == heights[1] == heights[2] > heights[3]
    assert contact_sheets(Section("y", "Y", "", [], 0), 16, 4, 2) == []


# ------------------------------------------------------------------------------------------------ the job
@pytest.fixture
def review_inputs(tmp_path: Path) -> dict:
    frame, summary = filtered_inputs(tmp_path)
    return {"root": tmp_path, "frame": frame, "summary": summary, "images": tmp_path / "images"}


def test_review_page_counts_match_the_filter_output(review_inputs):
    root, frame, summary = review_inputs["root"], review_inputs["frame"], review_inputs["summary"]
    dups = add_duplicates_and_merges(root / "filter", frame)
    results = run_review(
        review_job(str(root / "ann"), str(root / "review"), str(root / "filter"), identity_samples=2)
    )
    page = ReviewPage((root / "review" / "index.html").read_text())

    assert summary["label_noise_flagged"] >= 1
    flagged = pd.read_parquet(root / "filter" / "keep_list.parquet").query("label_noise")
    assert "Identity_0/Identity_0_0004.jpg" in " ".join(flagged.path)
    assert page.roles["label_noise"]["subject"] == page.count["label_noise"] == summary["label_noise_flagged"]
    assert page.roles["label_noise"]["own"] <= 2 * summary["label_noise_flagged"]
    assert page.roles["label_noise"]["nearest"] >= 1
    assert page.shown["duplicates"] == page.count["duplicates"] == len(dups)
    assert page.roles["duplicates"]["subject"] == page.images["duplicates"] == 2 * len(dups)
    assert (
        page.count["merges"] == len(MERGE_ROWS)
        and page.roles["merges"]["a"] == page.roles["merges"]["b"] == 2 * 2
    )
    scored = frame[(frame.status == "ok")]
    assert page.images["lowest"] == page.images["highest"] == page.count["lowest"] == 5
    assert sum(page.count[f"band-{k:02d}"] for k in range(4)) == len(scored)
    assert [page.images[f"band-{k:02d}"] for k in range(4)] == [
        min(3, page.count[f"band-{k:02d}"]) for k in range(4)
    ]
    # the two unshowable ok rows are the lowest: placeholder tiles, counted skips, never an error
    assert sorted(Path(p).name for p in set(page.unreadable)) == sorted(Path(u).name for u in UNSHOWABLE)
    assert results["skipped"]["count"] == 2 and results["skipped"]["by_status"] == {
        "not_an_image": 1,
        "read_error": 1,
    }
    manifest = json.loads((root / "review" / "_froq" / "manifest.json").read_text())
    assert manifest["job"] == "review" and manifest["counts_by_status"] == {"corrupt": 1, "ok": len(scored)}
    assert manifest["results"]["sections"]["label_noise"]["count"] == summary["label_noise_flagged"]
    for src in page.image_sources:  # every thumbnail is an embedded JPEG that decodes
        assert src.startswith("data:image/jpeg;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size == (112, 112)
    sheets = sorted(p.name for p in (root / "review" / "sheets").iterdir())
    assert "label_noise-00.png" in sheets and "lowest-00.png" in sheets and "merges-00.png" in sheets
    assert not page.absent


def test_sections_without_their_source_say_so(review_inputs):
    root = review_inputs["root"]
    # a filter output without the two reports (an older filter, or both searches switched off)
    shutil.copytree(root / "filter", root / "filter-old")
    for name in (MERGES, DUPLICATES):
        (root / "filter-old" / name).unlink()
    run_review(review_job(str(root / "ann"), str(root / "r1"), str(root / "filter-old")))
    page = ReviewPage((root / "r1" / "index.html").read_text())
    assert page.absent == {"merges", "duplicates"} and page.images["merges"] == page.images["duplicates"] == 0
    text = (root / "r1" / "index.html").read_text()
    assert f"has no {MERGES}" in text and f"has no {DUPLICATES}" in text
    run_review(review_job(str(root / "ann"), str(root / "r2"), identity_source="folder"))
    page = ReviewPage((root / "r2" / "index.html").read_text())
    assert page.absent == {"label_noise", "merges", "duplicates"} and page.images["lowest"] == 5


def test_calibration_percentiles_are_used_when_annotated(review_inputs):
    root, frame = review_inputs["root"], review_inputs["frame"]
    pct = np.linspace(0, 100, len(frame)).astype(np.float32)
    write_annotations(frame, root / "ann-pct", extra={"quality_percentile": pct})
    results = run_review(review_job(str(root / "ann-pct"), str(root / "rp"), bands=2))
    assert results["percentile_source"] == "calibration"
    ok = frame.status.to_numpy() == "ok"
    assert results["sections"]["band-00"]["count"] == int((pct[ok] < 50).sum())
    assert results["sections"]["band-01"]["count"] == int((pct[ok] >= 50).sum())


def test_output_mode_and_determinism(review_inputs):
    root = review_inputs["root"]
    args = (str(root / "ann"), str(root / "out"), str(root / "filter"))
    run_review(review_job(*args))
    first = {
        p.name: p.read_bytes() for p in [root / "out" / "index.html", *(root / "out" / "sheets").iterdir()]
    }
    with pytest.raises(OutputStateError, match="error_if_exists"):
        run_review(review_job(*args))
    page = root / "out" / "index.html"
    stamp = page.stat().st_mtime_ns
    run_review(review_job(*args, mode="resume"))  # the finished review of the same inputs: nothing to do
    assert page.stat().st_mtime_ns == stamp
    run_review(review_job(*args, mode="overwrite", sheet_columns=2, sheet_rows=1))
    again = {p.name: p.read_bytes() for p in [page, *(root / "out" / "sheets").iterdir()]}
    assert len(again) > len(first) and "lowest-02.png" in again  # 5 tiles in rows of 2: 3 one-row sheets
    run_review(review_job(*args, mode="overwrite"))
    assert {
        p.name: p.read_bytes() for p in [page, *(root / "out" / "sheets").iterdir()]
    } == first  # same bytes


def test_cli_and_errors(review_inputs, capsys):
    root = review_inputs["root"]
    argv = [
        "review",
        "--annotations",
        str(root / "ann"),
        "--filter",
        str(root / "filter"),
        "--output",
        str(root / "c"),
    ]
    assert main([*argv, "--set", "review.extremes=3"]) == 0
    assert ReviewPage((root / "c" / "index.html").read_text()).images["lowest"] == 3
    assert (
        main(
            [
                "review",
                "--annotations",
                str(root / "ann"),
                "--filter",
                str(root / "ann"),
                "--output",
                str(root / "d"),
            ]
        )
        == 2
    )
    assert "no keep_list.parquet in" in capsys.readouterr().err
    assert (
        main(
            [
                "review",
                "--annotations",
                str(root / "ann"),
                "--output",
                str(root / "e"),
                "--set",
                "review.quality_column=qq",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "no column(s) ['qq']" in err and "review.quality_column" in err and len(err.strip().splitlines()) == 1
    )
    other = root / "other-ann"
    write_annotations(review_inputs["frame"].iloc[:5], other)
    with pytest.raises(ReviewInputError, match="does not list the same images as the annotations"):
        run_review(review_job(str(other), str(root / "f"), str(root / "filter")))
    with pytest.raises(ConfigError, match="review.bands"):
        review_job(str(other), str(root / "g"), bands=-1)


def test_review_reads_annotations_images_and_filter_from_s3(tmp_path, s3):
    images = tmp_path / "images"
    write_images(images)
    fs = s3.filesystem()
    for path in sorted(images.rglob("*")):
        if path.is_file():
            fs.pipe(
                s3.uri("faces", path.relative_to(images).as_posix()).removeprefix("s3://"), path.read_bytes()
            )
    fs.rm(s3.uri("faces", UNSHOWABLE[0]).removeprefix("s3://"))
    frame = annotation_frame(images, prefix=s3.uri("faces"))
    write_annotations(frame, s3.uri("ann").removeprefix("s3://"), fs=fs)
    summary = run_filter_on(s3.uri("ann"), s3.uri("filter"), s3.storage_options)
    options = json.dumps(s3.storage_options)
    argv = [
        "review",
        "--annotations",
        s3.uri("ann"),
        "--filter",
        s3.uri("filter"),
        "--output",
        s3.uri("review"),
    ]
    assert (
        main(
            [
                *argv,
                "--set",
                f"review.storage_options={options}",
                "--set",
                f"output.storage_options={options}",
            ]
        )
        == 0
    )
    page = ReviewPage(fs.cat(s3.uri("review", "index.html").removeprefix("s3://")).decode())
    assert page.roles["label_noise"]["subject"] == summary["label_noise_flagged"] >= 1
    assert sorted(Path(p).name for p in set(page.unreadable)) == sorted(Path(u).name for u in UNSHOWABLE)
    assert page.images["lowest"] == min(48, int((frame.status == "ok").sum()))
    with fs.open(s3.uri("review", "_froq", "manifest.json").removeprefix("s3://"), "rt") as f:
        manifest = json.load(f)
    assert manifest["results"]["skipped"]["count"] == 2 and "testing" not in json.dumps(manifest["config"])
    assert fs.exists(s3.uri("review", "sheets", "lowest-00.png").removeprefix("s3://"))


def test_shipped_config_and_job_entrypoint(review_inputs, monkeypatch):
    root = review_inputs["root"]
    repo = Path(__file__).resolve().parents[3]
    monkeypatch.chdir(repo)
    cfg = load_config(repo / "configs" / "review.yaml", expected_job="review")
    assert cfg.review.annotations == [str(repo / "out" / "annotate")] and cfg.review.filter == str(
        repo / "out" / "filter"
    )
    assert (cfg.review.extremes, cfg.review.bands, cfg.output.uri) == (48, 10, str(repo / "out" / "review"))
    sets = [
        f"review.annotations={root / 'ann'}",
        f"review.filter={root / 'filter'}",
        f"output.uri={root / 'j'}",
    ]
    argv = ["jobs/review.py", "--config", "configs/review.yaml", *(a for s in sets for a in ("--set", s))]
    done = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert done.returncode == 0, done.stderr
    assert (
        ReviewPage((root / "j" / "index.html").read_text()).count["label_noise"]
        == review_inputs["summary"]["label_noise_flagged"]
    )


def test_rows_not_ok_are_counted_by_status_on_the_page_and_in_the_manifest(review_inputs, caplog):
    root, frame = review_inputs["root"], review_inputs["frame"].copy()
    changed = {1: "empty", 2: "not_an_image", 3: "ok"}  # + the fixture's one corrupt row
    for k, status in changed.items():
        frame.loc[k, "status"] = status
        frame.loc[k, "quality"] = np.nan  # row 3: ok, but without a quality
    write_annotations(frame, root / "ann-bad")
    with caplog.at_level("WARNING", logger="froq_ray"):
        results = run_review(review_job(str(root / "ann-bad"), str(root / "bad")))
    left_out = frame[(frame.status != "ok") | frame.quality.isna()]
    want = {
        "count": len(left_out),
        "by_status": {"corrupt": 1, "empty": 1, "not_an_image": 1},
        "ok_without_quality": 1,
        "examples": sorted(left_out.path)[:5],
    }
    assert len(left_out) == 4 and results["not_scored"] == want
    manifest = json.loads((root / "bad" / "_froq" / "manifest.json").read_text())
    assert manifest["results"]["not_scored"] == want
    assert manifest["counts_by_status"] == {"corrupt": 1, "empty": 1, "not_an_image": 1, "ok": len(frame) - 3}
    text = (
        "4 annotation row(s) not in the quality sections (corrupt 1, empty 1, not_an_image 1, ok without a finite "
        f"quality 1); e.g. {', '.join(want['examples'])}"
    )
    assert text in caplog.text
    page = (root / "bad" / "index.html").read_text()
    assert "not scored" in page and html.escape(text) in page
    page_ok = ReviewPage(page)
    assert sum(page_ok.count[f"band-{k:02d}"] for k in range(4)) == len(frame) - 4
