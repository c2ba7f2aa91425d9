"""`froq export`: a keep-list's real LFW-dev images -> identity folders (copies or links), Parquet shards, WebDataset
tar shards, read back with pandas, Hugging Face `datasets` and `webdataset` and compared byte for byte with the
sources; a missing source or a kept row whose status is not ok is a counted, named skip; output modes; the
sources are never touched. The shards are written by Ray tasks on the test's local cluster (`ray_cluster`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from froq_ray.cli import main
from froq_ray.pipeline.filter import KEEP_LIST
from tests.integration.jobfiles import env_with_repo_on_path, lfw_sample

pytestmark = pytest.mark.usefixtures("ray_cluster")  # the export's shard tasks run on the test cluster

IDENTITIES = 3
PER_IDENTITY = 3


@pytest.fixture
def source(tmp_path, lfw_dev_dir) -> Path:
    """3 identities x 3 real crops copied to tmp/src/<identity>/<file>."""
    for path in lfw_sample(lfw_dev_dir, identities=IDENTITIES, per_identity=PER_IDENTITY):
        (tmp_path / "src" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp_path / "src" / path.parent.name / path.name)
    return tmp_path / "src"


@pytest.fixture
def keep_list(tmp_path, source) -> pd.DataFrame:
    """A filter output folder whose keep-list keeps 7 of the 9 images (a null quality on one kept row)."""
    paths = sorted(str(p) for p in source.rglob("*.jpg"))
    frame = pd.DataFrame(
        {
            "path": paths,
            "identity": [Path(p).parent.name for p in paths],
            "keep": [i not in (1, 5) for i in range(len(paths))],
            "reason": ["kept" if i not in (1, 5) else "quality_floor" for i in range(len(paths))],
            "quality": [None if i == 3 else 10.0 + i for i in range(len(paths))],
        }
    )
    (tmp_path / "filter").mkdir()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "filter" / KEEP_LIST)
    return frame


def kept(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame.keep].reset_index(drop=True)
    classes = sorted(set(rows.identity))
    return rows.assign(label=[classes.index(i) for i in rows.identity])


def export(tmp_path: Path, fmt: str, *extra: str, out: str = "out") -> int:
    return main(
        [
            "export",
            "--keep-list",
            str(tmp_path / "filter"),
            "--output",
            str(tmp_path / out),
            "--format",
            fmt,
            "--set",
            "export.shard_size=3",
            *extra,
        ]
    )


def digests(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def manifest(out: Path) -> dict:
    return json.loads((out / "_froq" / "manifest.json").read_text())


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """Hugging Face `datasets` with its cache in tmp and no network."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf-cache"


def test_folder_copies_every_kept_image_under_its_identity(tmp_path, source, keep_list):
    before = digests(source)
    assert export(tmp_path, "folder") == 0
    out = tmp_path / "out"
    want = kept(keep_list)
    files = sorted(p for p in out.rglob("*") if p.is_file() and "_froq" not in p.parts)
    assert [str(p.relative_to(out)) for p in files] == [
        f"{i}/{Path(p).name}" for p, i in zip(want.path, want.identity, strict=True)
    ]
    for path, identity in zip(want.path, want.identity, strict=True):
        assert (out / identity / Path(path).name).read_bytes() == Path(path).read_bytes()
        assert not (out / identity / Path(path).name).is_symlink()
    assert digests(source) == before  # sources untouched (content and modification time)
    m = manifest(out)["results"]
    assert (m["keep_list_rows"], m["kept"], m["written"], m["skipped"]["count"]) == (9, 7, 7, 0)
    assert (m["shards"], m["format"]) == (3, "folder")
    assert manifest(out)["counts_by_status"] == {"exported": 7, "not_kept": 2}
    assert json.loads((out / "_froq" / "classes.json").read_text()) == sorted(set(want.identity))


def test_folder_links_point_at_the_sources(tmp_path, source, keep_list):
    before = digests(source)
    assert export(tmp_path, "folder", "--set", "export.link=true") == 0
    for path, identity in zip(kept(keep_list).path, kept(keep_list).identity, strict=True):
        link = tmp_path / "out" / identity / Path(path).name
        assert link.is_symlink() and os.readlink(link) == path
        assert link.read_bytes() == Path(path).read_bytes()
    # overwriting the linked export removes the links, never what they point at
    assert export(tmp_path, "parquet", "--mode", "overwrite") == 0
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))
    assert digests(source) == before


def test_parquet_shards_read_back_with_pandas_and_datasets(tmp_path, keep_list, hf_offline):
    assert export(tmp_path, "parquet") == 0
    out = tmp_path / "out"
    want = kept(keep_list)
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    df = pd.read_parquet(out)
    assert df.columns.tolist() == ["image", "path", "identity", "label", "quality"]
    assert df.path.tolist() == want.path.tolist() and df.identity.tolist() == want.identity.tolist()
    assert df.label.tolist() == want.label.tolist()
    assert [img["bytes"] for img in df.image] == [Path(p).read_bytes() for p in want.path]
    expected_quality = want.quality.astype(np.float32).to_numpy()
    np.testing.assert_array_equal(df.quality.to_numpy(), expected_quality)  # NaN (null) where none
    assert df.quality.isna().tolist() == want.quality.isna().tolist()

    import datasets

    ds = datasets.load_dataset(
        "parquet", data_files=str(out / "*.parquet"), split="train", cache_dir=str(hf_offline)
    )
    assert ds.num_rows == 7 and isinstance(ds.features["image"], datasets.Image)
    assert ds["path"] == want.path.tolist() and ds["label"] == want.label.tolist()
    first = ds[0]["image"]
    np.testing.assert_array_equal(
        np.asarray(first.convert("RGB")), np.asarray(Image.open(want.path[0]).convert("RGB"))
    )
    raw = ds.cast_column("image", datasets.Image(decode=False))
    assert [r["bytes"] for r in raw["image"]] == [Path(p).read_bytes() for p in want.path]


def test_webdataset_shards_read_back_with_webdataset_and_datasets(tmp_path, keep_list, hf_offline):
    assert export(tmp_path, "webdataset") == 0
    out = tmp_path / "out"
    want = kept(keep_list)
    tars = sorted(str(p) for p in out.glob("shard-*.tar"))
    assert [Path(t).name for t in tars] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]

    import webdataset as wds

    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(7)]
    assert [s["jpg"] for s in samples] == [Path(p).read_bytes() for p in want.path]
    assert [int(s["cls"]) for s in samples] == want.label.tolist()
    meta = [json.loads(s["json"]) for s in samples]
    assert [m["path"] for m in meta] == want.path.tolist() and [
        m["identity"] for m in meta
    ] == want.identity.tolist()
    assert [m["quality"] for m in meta] == [None if np.isnan(q) else pytest.approx(q) for q in want.quality]

    import datasets

    ds = datasets.load_dataset("webdataset", data_files=tars, split="train", cache_dir=str(hf_offline))
    assert ds.num_rows == 7
    assert ds["__key__"] == [f"{i:09d}" for i in range(7)]
    assert [int(c) for c in ds["cls"]] == want.label.tolist()
    assert [j["identity"] for j in ds["json"]] == want.identity.tolist()
    np.testing.assert_array_equal(
        np.asarray(ds[6]["jpg"].convert("RGB")), np.asarray(Image.open(want.path[6]).convert("RGB"))
    )


def test_a_missing_source_is_a_counted_named_skip(tmp_path, keep_list, capsys):
    want = kept(keep_list)
    gone = want.path[2]
    os.remove(gone)
    assert export(tmp_path, "webdataset") == 0
    out = tmp_path / "out"
    m = manifest(out)["results"]
    assert (m["kept"], m["written"]) == (7, 6)
    assert manifest(out)["counts_by_status"] == {"exported": 6, "missing": 1, "not_kept": 2}
    assert m["skipped"] == {
        "count": 1,
        "by_reason": {"missing": 1},
        "paths": [gone],
        "all_in": "_froq/skipped.parquet",
    }
    skipped = pd.read_parquet(out / "_froq" / "skipped.parquet")
    assert skipped.path.tolist() == [gone] and skipped.reason.tolist() == ["missing"]
    assert f"1 kept image(s) skipped {{'missing': 1}}, e.g. {gone}" in capsys.readouterr().out  # the log
    import webdataset as wds

    paths = [
        json.loads(s["json"])["path"]
        for s in wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False)
    ]
    assert paths == [p for p in want.path if p != gone]


def test_output_modes(tmp_path, keep_list, capsys):
    out = tmp_path / "out"
    assert export(tmp_path, "folder") == 0
    markers = {p.name: p.read_text() for p in (out / "_froq").glob("part-*.done.json")}
    assert len(markers) == 3
    # resume: a finished export changes nothing
    assert export(tmp_path, "folder") == 0
    assert {p.name: p.read_text() for p in (out / "_froq").glob("part-*.done.json")} == markers
    # resume after an interrupted shard redoes that shard only
    (out / "_froq" / "part-00001.done.json").unlink()
    shutil.rmtree(out / kept(keep_list).identity[4])
    assert export(tmp_path, "folder") == 0
    after = {p.name: p.read_text() for p in (out / "_froq").glob("part-*.done.json")}
    assert after["part-00000.done.json"] == markers["part-00000.done.json"]
    assert after["part-00002.done.json"] == markers["part-00002.done.json"]
    assert (out / kept(keep_list).identity[4] / Path(kept(keep_list).path[4]).name).is_file()
    # a changed format does not resume
    capsys.readouterr()
    assert export(tmp_path, "parquet") == 2
    assert "export.format" in capsys.readouterr().err
    # error_if_exists refuses an export folder
    assert export(tmp_path, "parquet", "--mode", "error_if_exists") == 2
    assert "error_if_exists" in capsys.readouterr().err
    # overwrite removes the earlier export's files (and only those), then writes the new one
    (out / "_froq" / "note.txt").write_text("mine")
    assert export(tmp_path, "parquet", "--mode", "overwrite") == 0
    top = sorted(p.name for p in out.iterdir())
    assert top == ["_froq", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert (out / "_froq" / "note.txt").read_text() == "mine"
    assert len(pd.read_parquet(out)) == 7


def test_force_resumes_a_changed_config_leaving_only_the_new_plan(tmp_path, keep_list, capsys):
    """The refusal of a changed config suggests --force; a forced resume undoes every shard of the earlier
    plan (other format, other shard size) and writes this one, so nothing of the earlier export stays."""
    out = tmp_path / "out"
    assert export(tmp_path, "folder") == 0
    capsys.readouterr()
    assert export(tmp_path, "parquet") == 2
    err = capsys.readouterr().err
    assert "export.format" in err and "--force to resume anyway" in err
    assert export(tmp_path, "parquet", "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "_froq",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert pd.read_parquet(out).path.tolist() == kept(keep_list).path.tolist()
    assert manifest(out)["results"]["forced"] and manifest(out)["results"]["shards_written_this_run"] == 3
    # a forced resume with another shard size keeps no part of the earlier plan
    assert export(tmp_path, "parquet", "--force", "--set", "export.shard_size=5") == 0
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert sorted(p.name for p in (out / "_froq").glob("*-0000*.json")) == [
        "files-00000.json",
        "files-00001.json",
        "part-00000.done.json",
        "part-00001.done.json",
    ]
    assert pd.read_parquet(out).path.tolist() == kept(keep_list).path.tolist()
    # the same config resumes without --force and writes nothing
    assert export(tmp_path, "parquet", "--set", "export.shard_size=5") == 0
    assert manifest(out)["results"]["shards_written_this_run"] == 0 and not manifest(out)["results"]["forced"]


def test_refusals_name_the_problem(tmp_path, source, keep_list, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "report.pdf").write_bytes(b"%PDF")
    assert export(tmp_path, "folder", "--mode", "overwrite", out="busy") == 2
    assert "did not write (e.g. report.pdf)" in capsys.readouterr().err
    assert (tmp_path / "busy" / "report.pdf").read_bytes() == b"%PDF"

    inside = source / kept(keep_list).identity[0] / "export"
    assert export(tmp_path, "folder", out=str(inside.relative_to(tmp_path))) == 2
    assert "inside the source folder" in capsys.readouterr().err and not inside.exists()

    assert export(tmp_path, "parquet", "--set", "export.link=true") == 2
    assert "link=true is only for format=folder" in capsys.readouterr().err

    assert main(["export", "--keep-list", str(tmp_path / "nope"), "--output", str(tmp_path / "o2")]) == 2
    assert f"keep-list: annotations not found: {tmp_path / 'nope'}" in capsys.readouterr().err


def test_a_keep_list_without_identities_exports_nulls_to_parquet(tmp_path, source):
    paths = sorted(str(p) for p in source.rglob("*.jpg"))[:2]
    (tmp_path / "filter").mkdir()
    table = pa.table({"path": paths, "keep": [True, True], "identity": pa.array([None, None], pa.string())})
    pq.write_table(table, tmp_path / "filter" / KEEP_LIST)
    assert export(tmp_path, "parquet") == 0
    df = pd.read_parquet(tmp_path / "out")
    assert df.identity.isna().all() and df.label.tolist() == [-1, -1]
    assert export(tmp_path, "folder", out="folder") == 2


@pytest.mark.usefixtures("keep_list")
def test_tar_members_are_plain_files(tmp_path):
    import tarfile

    assert export(tmp_path, "webdataset") == 0
    with tarfile.open(tmp_path / "out" / "shard-00000.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            f"00000000{i}.{e}" for i in range(3) for e in ("jpg", "cls", "json")
        ]
        assert all(m.isfile() for m in members)
        data = tar.extractfile(members[0]).read()
    assert Image.open(io.BytesIO(data)).size == (112, 112)


def test_the_shipped_config_validates(monkeypatch):
    from froq_ray.config import load_config
    from tests.conftest import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)
    cfg = load_config(REPO_ROOT / "configs" / "export.yaml", expected_job="export")
    assert cfg.export.keep_list == str(REPO_ROOT / "out" / "filter") and cfg.export.format == "folder"
    assert cfg.output.uri == str(REPO_ROOT / "out" / "export")


def test_s3_sources_to_s3_webdataset_and_folder(tmp_path, s3, keep_list):
    """Keep-list, sources and output on the local S3 server: the shards hold the objects' bytes; a missing
    object is a named skip; the folder format writes <identity>/<name> keys."""
    fs = s3.filesystem()
    want = kept(keep_list)
    uris = {p: s3.uri("src", Path(p).parent.name, Path(p).name) for p in keep_list.path}
    for local, uri in uris.items():
        fs.pipe(uri.removeprefix("s3://"), Path(local).read_bytes())
    gone = uris[want.path[0]]
    fs.rm(gone.removeprefix("s3://"))
    remote = keep_list.assign(path=[uris[p] for p in keep_list.path])
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(remote, preserve_index=False), buffer)
    fs.pipe(s3.uri("filter", KEEP_LIST).removeprefix("s3://"), buffer.getvalue())
    options = json.dumps(s3.storage_options)
    common = ["--keep-list", s3.uri("filter"), "--set", f"export.storage_options={options}"]
    common += ["--set", f"output.storage_options={options}"]

    assert main(["export", *common, "--output", s3.uri("wds"), "--format", "webdataset"]) == 0
    import webdataset as wds

    tars = sorted(fs.glob(s3.uri("wds", "shard-*.tar").removeprefix("s3://")))
    local = tmp_path / "tars"
    local.mkdir()
    for key in tars:
        (local / Path(key).name).write_bytes(fs.cat(key))
    samples = list(wds.WebDataset(sorted(str(p) for p in local.iterdir()), shardshuffle=False))
    assert [s["jpg"] for s in samples] == [Path(p).read_bytes() for p in want.path[1:]]
    with fs.open(s3.uri("wds", "_froq", "manifest.json").removeprefix("s3://"), "rt") as f:
        m = json.load(f)
    assert m["results"]["skipped"]["paths"] == [gone] and m["results"]["written"] == 6

    assert main(["export", *common, "--output", s3.uri("folder"), "--format", "folder"]) == 0
    for path, identity in zip(want.path[1:], want.identity[1:], strict=True):
        assert (
            fs.cat(s3.uri("folder", identity, Path(path).name).removeprefix("s3://"))
            == Path(path).read_bytes()
        )


def test_a_keep_list_mixing_null_and_named_identities_gets_labels_and_minus_one(tmp_path, source):
    """A hand-edited keep list with one null identity among named ones (pandas would make the null a NaN and
    the class sort would crash): the named rows get class labels, the null row -1 and a null identity."""
    paths = sorted(str(p) for p in source.rglob("*.jpg"))[:3]
    (tmp_path / "filter").mkdir()
    identities = pa.array(["b", None, "a"], pa.string())
    pq.write_table(
        pa.table({"path": paths, "keep": [True, True, True], "identity": identities}),
        tmp_path / "filter" / KEEP_LIST,
    )
    assert export(tmp_path, "parquet") == 0
    df = pd.read_parquet(tmp_path / "out").set_index("path").loc[paths]
    assert df.identity.tolist()[0::2] == ["b", "a"] and pd.isna(df.identity.iloc[1])
    assert df.label.tolist() == [1, -1, 0]  # classes sorted: a=0, b=1


def test_the_shards_are_read_and_written_by_ray_workers_not_the_driver(tmp_path, keep_list):
    """Each shard's marker records the process that read its sources and wrote its files: a Ray worker on this
    machine, never the driver (this test process); the shards' contents are still the kept images."""
    assert export(tmp_path, "parquet") == 0
    out = tmp_path / "out"
    markers = [json.loads(p.read_text()) for p in sorted((out / "_froq").glob("part-*.done.json"))]
    assert [m["shard"] for m in markers] == [0, 1, 2]
    workers = {(m["worker"]["host"], m["worker"]["pid"]) for m in markers}
    assert all(host == socket.gethostname() for host, _ in workers)
    assert os.getpid() not in {pid for _, pid in workers}
    for _, pid in workers:  # Ray's worker processes name themselves "ray::<task or IDLE>"
        assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"), pid
    assert pd.read_parquet(out).path.tolist() == kept(keep_list).path.tolist()


def status_keep_list(tmp_path: Path, source: Path) -> pd.DataFrame:
    """A keep-list as annotate + a hand edit leave it: the 9 real crops (status ok, one not kept), plus kept rows
    whose status is not ok: a text file named .jpg (not_an_image), a real crop marked corrupt, a null status."""
    crops = sorted(str(p) for p in source.rglob("*.jpg"))
    text = source / Path(crops[0]).parent.name / "readme.jpg"
    text.write_bytes(b"not a picture\n")
    paths = [*crops, str(text)]
    status = ["ok"] * len(paths)
    status[-1] = "not_an_image"
    status[4] = "corrupt"
    status[6] = None
    frame = pd.DataFrame(
        {
            "path": paths,
            "identity": [Path(p).parent.name for p in paths],
            "keep": [i != 1 for i in range(len(paths))],
            "status": status,
            "quality": [10.0 + i for i in range(len(paths))],
        }
    )
    (tmp_path / "filter").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "filter" / KEEP_LIST)
    return frame


def test_kept_rows_whose_status_is_not_ok_are_counted_named_skips(tmp_path, source, capsys):
    frame = status_keep_list(tmp_path, source)
    assert export(tmp_path, "folder") == 0
    out = tmp_path / "out"
    kept_rows = frame[frame.keep]
    ok = kept_rows[kept_rows.status == "ok"]
    bad = kept_rows[kept_rows.status != "ok"].sort_values("path")
    reasons = ["status_null" if pd.isna(s) else f"status_{s}" for s in bad.status]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "_froq" not in p.parts)
    assert files == sorted(f"{i}/{Path(p).name}" for p, i in zip(ok.path, ok.identity, strict=True))
    for path, identity in zip(ok.path, ok.identity, strict=True):
        assert (out / identity / Path(path).name).read_bytes() == Path(path).read_bytes()
    m = manifest(out)
    assert m["counts_by_status"] == dict(
        sorted({"exported": len(ok), "not_kept": 1, **{r: reasons.count(r) for r in reasons}}.items())
    )
    assert m["results"]["written"] == len(ok) == 6 and m["results"]["skipped"]["count"] == 3
    assert m["results"]["skipped"]["by_reason"] == {
        "status_corrupt": 1,
        "status_not_an_image": 1,
        "status_null": 1,
    }
    skipped = pd.read_parquet(out / "_froq" / "skipped.parquet").sort_values("path")
    assert skipped.path.tolist() == bad.path.tolist() and skipped.reason.tolist() == reasons
    assert all(e.startswith(f"{p}: ") for p, e in zip(skipped.path, skipped.error, strict=True))
    log = capsys.readouterr().out
    assert "3 kept image(s) skipped {'status_corrupt': 1, 'status_not_an_image': 1, 'status_null': 1}" in log

    # a status edited after the export (ok -> corrupt): the resume rewrites that row's shard without it
    edited = frame.assign(status=["corrupt" if i == 0 else s for i, s in enumerate(frame.status)])
    pq.write_table(pa.Table.from_pandas(edited, preserve_index=False), tmp_path / "filter" / KEEP_LIST)
    assert export(tmp_path, "folder") == 0
    first = Path(frame.path[0])
    assert not (out / first.parent.name / first.name).exists()
    assert manifest(out)["results"]["written"] == len(ok) - 1
    assert manifest(out)["results"]["shards_written_this_run"] == 1


KILL_AFTER_SHARDS = 20


@pytest.mark.timeout(600)
def test_a_killed_export_resumes_to_exactly_one_copy_of_each_kept_image(tmp_path, lfw_dev_dir, ray_cluster):
    """The export driver (joined to the test cluster) is killed once KILL_AFTER_SHARDS shard markers exist (a
    count, not a time); the re-run keeps every completed shard as it was and writes the rest: each kept image
    once, in keep-list order, byte for byte."""
    paths = sorted(str(p) for p in (lfw_dev_dir / "images").rglob("*.jpg"))
    (tmp_path / "filter").mkdir()
    pq.write_table(
        pa.table(
            {"path": paths, "identity": [Path(p).parent.name for p in paths], "keep": [True] * len(paths)}
        ),
        tmp_path / "filter" / KEEP_LIST,
    )
    shard_size = 2
    n_shards = -(-len(paths) // shard_size)
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    args = ["export", "--keep-list", str(tmp_path / "filter"), "--output", str(out), "--format", "parquet"]
    args += ["--set", f"export.shard_size={shard_size}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "froq_ray.cli", *args, "--set", f"resources.ray_address={address}"],
        env=env_with_repo_on_path(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while (
            len(list((out / "_froq").glob("part-*.done.json"))) < KILL_AFTER_SHARDS
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.02)
        exited_by_itself = proc.poll()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert exited_by_itself is None, f"the export ended (exit {exited_by_itself}) before it could be killed"
    before = {p.name: p.read_bytes() for p in (out / "_froq").glob("part-*.done.json")}
    assert KILL_AFTER_SHARDS <= len(before) < n_shards, f"not killed mid-way: {len(before)}/{n_shards} shards"
    parts_before = {n: (out / n.replace(".done.json", ".parquet")).read_bytes() for n in before}

    assert main(args) == 0  # the re-run, in this process (already on the cluster)
    after = {p.name: p.read_bytes() for p in (out / "_froq").glob("part-*.done.json")}
    assert len(after) == n_shards
    assert all(after[n] == before[n] for n in before), "completed shards were rewritten"
    assert all((out / n.replace(".done.json", ".parquet")).read_bytes() == b for n, b in parts_before.items())
    table = pd.read_parquet(out)
    assert table.path.tolist() == paths  # each kept image exactly once, in order
    sample = range(0, len(paths), 97)
    assert [table.image[i]["bytes"] for i in sample] == [Path(paths[i]).read_bytes() for i in sample]
    m = manifest(out)["results"]
    assert (
        m["written"] == len(paths) and m["resumed"] and m["shards_written_this_run"] == n_shards - len(before)
    )


def test_a_task_resources_refusal_leaves_a_new_output_untouched(tmp_path, keep_list, capsys):
    """Tasks that need more CPUs than the driver's node has (the test cluster has 2) are refused before the
    output is opened: the new output gets no `_froq/` state, so the corrected re-run, even with
    error_if_exists, is a fresh export."""
    assert export(tmp_path, "parquet", "--set", "resources.export_num_cpus=99", out="new") == 2
    err = capsys.readouterr().err
    assert "resources.export_num_cpus=99: the tasks need 99 CPU(s) each" in err and "which has 2" in err
    assert not (tmp_path / "new").exists()
    assert export(tmp_path, "webdataset", "--mode", "error_if_exists", out="new") == 0
    assert manifest(tmp_path / "new")["results"]["written"] == len(kept(keep_list))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("inf", "must be a number (got 'inf')"),
        (".inf", "finite number"),
        ("true", "must be a number (got True)"),
        (".nan", "finite number"),
        ("'2'", "must be a number (got '2')"),
        ("0", "must be > 0"),
    ],
)
@pytest.mark.usefixtures("keep_list")
def test_export_num_cpus_must_be_a_finite_positive_number(tmp_path, capsys, value, problem):
    assert export(tmp_path, "parquet", "--set", f"resources.export_num_cpus={value}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("froq export: error: resources.export_num_cpus: ") and problem in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_classes_and_labels_come_from_the_rows_exported(tmp_path, source):
    """An identity whose only kept row is skipped for its status (a text file in folder `Bad`) is no class; the
    classes and labels are those of the kept rows whose status is ok, recounted here from the keep-list."""
    frame = status_keep_list(tmp_path, source)
    (source / "Bad").mkdir()
    (source / "Bad" / "x.jpg").write_bytes(b"plain text\n")
    bad = {"path": str(source / "Bad" / "x.jpg"), "identity": "Bad", "keep": True, "status": "not_an_image"}
    frame = pd.concat([frame, pd.DataFrame([{**bad, "quality": 1.0}])], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "filter" / KEEP_LIST)
    assert export(tmp_path, "parquet") == 0
    out = tmp_path / "out"
    exported = frame[frame.keep & (frame.status == "ok")].sort_values("path")
    want = sorted(set(exported.identity))
    assert "Bad" not in want and len(want) == IDENTITIES
    assert json.loads((out / "_froq" / "classes.json").read_text()) == want
    df = pd.read_parquet(out).sort_values("path")
    assert df.path.tolist() == exported.path.tolist()
    assert df.label.tolist() == [want.index(i) for i in exported.identity]
    assert set(df.label) == set(range(len(want)))  # every label has images
    results = manifest(out)["results"]
    assert results["identities"] == len(want) and results["status_checked"] is True
    assert results["skipped"]["by_reason"]["status_not_an_image"] == 2


def test_a_keep_list_without_status_is_exported_unchecked_with_a_warning(tmp_path, source, capsys):
    """Without a status column nothing says a kept file is an image: a text file named x.jpg is exported as it
    is, and the log and the manifest say that the rows were not checked."""
    crops = sorted(str(p) for p in source.rglob("*.jpg"))[:2]
    text = source / "x.jpg"
    text.write_bytes(b"plain text\n")
    paths = [*crops, str(text)]
    (tmp_path / "filter").mkdir()
    pq.write_table(
        pa.table({"path": paths, "identity": [Path(p).parent.name for p in paths], "keep": [True] * 3}),
        tmp_path / "filter" / KEEP_LIST,
    )
    assert export(tmp_path, "folder") == 0
    log = capsys.readouterr().out
    warning = f"keep-list {tmp_path / 'filter' / KEEP_LIST} has no status column: its 3 kept row(s) were not"
    assert log.count("has no status column") == 1 and warning in log
    assert (tmp_path / "out" / "src" / "x.jpg").read_bytes() == b"plain text\n"
    results = manifest(tmp_path / "out")["results"]
    assert results["status_checked"] is False and (results["written"], results["skipped"]["count"]) == (3, 0)


def test_a_null_or_non_boolean_keep_names_the_problem(tmp_path, source, capsys):
    paths = sorted(str(p) for p in source.rglob("*.jpg"))[:4]
    (tmp_path / "filter").mkdir()
    keep_file = tmp_path / "filter" / KEEP_LIST
    pq.write_table(
        pa.table({"path": paths, "keep": pa.array([True, False, None, None], pa.bool_())}), keep_file
    )
    assert export(tmp_path, "parquet") == 2
    err = capsys.readouterr().err
    assert f"{keep_file}: row 2 ({paths[2]}) has a null keep (2 null(s) in all)" in err
    pq.write_table(pa.table({"path": paths, "keep": ["yes", "no", "yes", "no"]}), keep_file)
    assert export(tmp_path, "parquet") == 2
    err = capsys.readouterr().err
    assert f"{keep_file}: keep must be a boolean column (it is string)" in err and "null keep" not in err
    assert not (tmp_path / "out").exists()
