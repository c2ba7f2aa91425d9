"""engine.inputs on a real local Ray: inputs listed by tasks into Parquet parts equal list_inputs row for row
(order, identities, counts), per-part digests, limit, reuse without listing, errors as the original class."""

from __future__ import annotations

import hashlib

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from froq_ray.config import InputConfig
from froq_ray.engine.inputs import INPUTS_DIR, PLAN_FILE, materialize_inputs, read_range
from froq_ray.storage.listing import InputListingError, list_inputs
from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.integration

# Names chosen so that top-level files sort between prefixes ("a.jpg" < "a-b/" < "a/" < "b.jpg" < "c/"):
# the parallel S3 lister must interleave its units to keep the global path order.
S3_FILES = [
    "a.jpg",
    "a-b/x.jpg",
    "a-b/y.png",
    "a/1.jpg",
    "a/2.jpg",
    "a/3.jpg",
    "a/4.jpg",
    "a/5.jpg",
    "a/deep/6.jpg",
    "a/notes.txt",
    "b.jpg",
    "b.md",
    "c/z/9.webp",
    "c/readme",
    "d.JPG",
]
TOP_IMAGES = ["a.jpg", "b.jpg", "d.JPG"]
LOCAL_FILES = [
    "bob/b1.jpeg",
    "alice/a2.PNG",
    "alice/a1.jpg",
    "alice/sub/a3.webp",
    "notes.txt",
    "bob/readme.md",
    "carol/c1.jpg",
    "carol/c2.jpg",
    "carol/c3.jpg",
]


def independent_digest(rows: list[tuple[str, str | None]]) -> str:
    h = hashlib.sha256()
    for path, identity in rows:
        h.update(f"{path}\t{identity or ''}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def check_plan(plan, cfg: InputConfig, fs, out: str) -> None:
    """The plan's parts and ranges give exactly list_inputs' rows, counts and digests."""
    listing = list_inputs(cfg)
    want = list(zip(listing.table["path"], listing.table["identity"], strict=True))
    assert plan.total_rows == len(want)
    assert plan.summary == {**listing.summary(), "parts": len(plan.parts)}
    all_rows = []
    for part in plan.parts:
        with fs.open(f"{out}/{INPUTS_DIR}/{part.name}", "rb") as f:
            table = pq.read_table(f)
        assert table.schema.field("path").type == pa.string() and not table.schema.field("path").nullable
        rows = list(zip(table.column("path").to_pylist(), table.column("identity").to_pylist(), strict=True))
        assert part.rows == len(rows) and part.digest == independent_digest(rows)
        all_rows += rows
    assert all_rows[: plan.total_rows] == want
    for k in (1, 2, 3, 1000):
        got = []
        for r in plan.ranges(k):
            assert r.row0 == len(got)
            table = read_range(fs, out, r)
            assert table.num_rows == r.rows <= k
            got += list(
                zip(table.column("path").to_pylist(), table.column("identity").to_pylist(), strict=True)
            )
        assert got == want


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_cluster")
def test_s3_prefix_listed_in_parallel_equals_list_inputs(s3):  # noqa: F811 - the s3 fixture imported above
    fs = s3.filesystem()
    for rel in S3_FILES:
        fs.pipe(f"{s3.bucket}/in/{rel}", rel.encode())
    fs.pipe(f"{s3.bucket}/in-sibling/x.jpg", b"x")  # a sibling prefix must not leak in
    out = f"{s3.bucket}/out"
    for options in ({"identity_from_folder": True}, {"limit": 7}, {"extensions": [".jpg"]}):
        cfg = InputConfig(uri=s3.uri("in"), storage_options=s3.storage_options, **options)
        plan = materialize_inputs(cfg, fs, out, reuse=False, part_rows=2)
        check_plan(plan, cfg, fs, out)
        assert len(plan.parts) > 5  # a/ alone is 6 images -> 3 parts of 2
        if cfg.identity_from_folder:  # the tasks' identities: top-level files (a.jpg, b.jpg, d.JPG) have none
            rows = [r for x in plan.ranges(100) for r in read_range(fs, out, x).to_pylist()]
            rel = {r["path"].removeprefix(s3.uri("in") + "/"): r["identity"] for r in rows}
            assert rel == {p: p.split("/")[-2] if "/" in p else None for p in rel} and len(rel) == 12
            assert plan.summary["no_identity"] == 3 and [p for p in rel if rel[p] is None] == TOP_IMAGES
    assert plan.summary["skipped"]["by_reason"]["extension"]["by_extension"] == {
        "(none)": 1,
        ".md": 1,
        ".png": 1,
        ".txt": 1,
        ".webp": 1,
    }
    limited = InputConfig(uri=s3.uri("in"), storage_options=s3.storage_options, limit=7)
    plan = materialize_inputs(limited, fs, out, reuse=False, part_rows=2)
    assert plan.total_rows == 7 and plan.summary["beyond_limit"] == 5  # 12 images

    # reuse: the source changes, the stored listing is returned without listing again
    fs.rm(f"{s3.bucket}/in/a", recursive=True)
    fs.pipe(f"{s3.bucket}/in/new.jpg", b"n")
    again = materialize_inputs(limited, fs, out, reuse=True, part_rows=2)
    assert again == plan and again.reused
    fresh = materialize_inputs(limited, fs, out, reuse=False, part_rows=2)
    assert fresh.digest != plan.digest and s3.uri("in/new.jpg") in [
        p for r in fresh.ranges(100) for p in read_range(fs, out, r).column("path").to_pylist()
    ]


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_cluster")
def test_s3_errors_keep_their_class_and_message(s3, tmp_path):  # noqa: F811 - the s3 fixture imported above
    fs = s3.filesystem()
    fs.pipe(f"{s3.bucket}/txt/a/notes.txt", b"t")
    fs.pipe(f"{s3.bucket}/txt/b.md", b"t")
    local = fsspec.filesystem("file")
    for uri in (s3.uri("txt"), s3.uri("nothing"), s3.uri("m.csv")):
        cfg = InputConfig(uri=uri, storage_options=s3.storage_options)
        with pytest.raises(InputListingError) as want:
            list_inputs(cfg)
        with pytest.raises(InputListingError) as got:
            materialize_inputs(cfg, local, str(tmp_path / "out"), reuse=False)
        assert type(got.value) is InputListingError and str(got.value) == str(want.value)
        assert "\n" not in str(got.value)
        assert not (tmp_path / "out" / PLAN_FILE).exists()


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_cluster")
def test_local_folder_with_reuse_and_limit(tmp_path):
    root = tmp_path / "images"
    for rel in LOCAL_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "e1.jpg").write_bytes(b"e")
    (root / "link").symlink_to(tmp_path / "extra")  # a followed link: listed and counted as list_inputs does
    fs = fsspec.filesystem("file")
    out = str(tmp_path / "out")
    cfg = InputConfig(uri=str(root), identity_from_folder=True)
    plan = materialize_inputs(cfg, fs, out, reuse=False, part_rows=4)
    check_plan(plan, cfg, fs, out)
    assert plan.summary["followed_links"] == 1 and plan.summary["skipped"]["total"] == 2

    limited = InputConfig(uri=str(root), identity_from_folder=True, limit=5)
    plan = materialize_inputs(limited, fs, out, reuse=False, part_rows=4)
    check_plan(plan, limited, fs, out)
    assert plan.total_rows == 5 and plan.summary["beyond_limit"] == 3  # 8 images

    for path in sorted(root.rglob("*"), reverse=True):  # the source is gone: reuse must not list
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    root.rmdir()
    assert materialize_inputs(limited, fs, out, reuse=True) == plan
    with pytest.raises(InputListingError, match=f"^input {root}: does not exist$"):
        materialize_inputs(limited, fs, out, reuse=False)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_cluster")
def test_csv_and_parquet_manifests(tmp_path):
    fs = fsspec.filesystem("file")
    out = str(tmp_path / "out")
    csv = tmp_path / "m.csv"
    csv.write_text(
        "path,who\nz/9.jpg,zed\na/1.jpg,\ns3://b/k.png,2019\na/1.jpg,\n/abs/x.gif,amy\nm.jpg,NaN\n"
    )
    pq.write_table(
        pa.table({"path": ["q.jpg", "b.jpg", "q.jpg", "c.jpg"], "who": [1, None, 1, 3]}),
        tmp_path / "m.parquet",
    )
    for uri, rows, missing_like in ((csv, 5, {"NaN": 1}), (tmp_path / "m.parquet", 3, {})):
        cfg = InputConfig(uri=str(uri), identity_column="who")
        plan = materialize_inputs(cfg, fs, out, reuse=False, part_rows=2)
        check_plan(plan, cfg, fs, out)
        assert (
            plan.total_rows == rows
            and plan.summary["duplicates"] == 1
            and plan.summary["source"] == "manifest"
            and plan.summary["missing_like_identities"] == missing_like  # counted by the listing task
            and plan.summary["no_identity"] == 1  # a/1.jpg's empty cell; b.jpg's Parquet null
        )

    csv.write_text("path,who\na.jpg,x\na.jpg,y\n")
    cfg = InputConfig(uri=str(csv), identity_column="who")
    with pytest.raises(InputListingError) as want:
        list_inputs(cfg)
    with pytest.raises(InputListingError) as got:
        materialize_inputs(cfg, fs, out, reuse=False)
    assert str(got.value) == str(want.value) and "two identities" in str(got.value)
