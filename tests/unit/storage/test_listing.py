"""Input listing: local folders, globs, CSV/Parquet manifests, s3:// prefixes on the local S3 server."""

from __future__ import annotations

import io
import logging
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from froq_ray.config import DEFAULT_EXTENSIONS, InputConfig
from froq_ray.imaging.decode import decode_batch
from froq_ray.storage.listing import InputListingError, input_digest, list_inputs
from froq_ray.storage.reader import read_blobs
from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)

FILES = ["bob/b1.jpeg", "alice/a2.PNG", "alice/a1.jpg", "alice/sub/a3.webp", "notes.txt", "bob/readme.md"]
IMAGES = sorted(f for f in FILES if not f.endswith((".txt", ".md")))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "images"
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    return root


def test_local_dir_recursive_sorted_extension_filter(tree):
    result = list_inputs(InputConfig(uri=str(tree)))
    listing = result.table
    assert list(listing.columns) == ["path", "identity"]
    assert listing["path"].tolist() == [str(tree / f) for f in IMAGES]
    assert listing["identity"].isna().all()
    assert result.source == "folder" and result.files_seen == len(FILES)
    assert result.skipped == {
        "extension": {
            "count": 2,
            "examples": [str(tree / "bob/readme.md"), str(tree / "notes.txt")],
            "by_extension": {".md": 1, ".txt": 1},
        }
    }


def test_identity_from_folder_and_limit(tree):
    listing = list_inputs(InputConfig(uri=str(tree), identity_from_folder=True, limit=3)).table
    assert listing["path"].tolist() == [str(tree / f) for f in IMAGES[:3]]
    assert listing["identity"].tolist() == ["alice", "alice", "sub"]


def test_extensions_configurable_case_insensitive(tree):
    listing = list_inputs(InputConfig(uri=str(tree), extensions=["PNG", ".TXT"])).table
    assert listing["path"].tolist() == [str(tree / "alice/a2.PNG"), str(tree / "notes.txt")]


def test_local_glob(tree):
    listing = list_inputs(InputConfig(uri=str(tree / "alice" / "*"))).table
    assert listing["path"].tolist() == [str(tree / "alice/a1.jpg"), str(tree / "alice/a2.PNG")]
    recursive = list_inputs(InputConfig(uri=str(tree / "**" / "*.webp"))).table
    assert recursive["path"].tolist() == [str(tree / "alice/sub/a3.webp")]


def test_csv_manifest_relative_paths_and_identity_column(tree):
    manifest = tree / "lists" / "m.csv"
    manifest.parent.mkdir()
    pd.DataFrame(
        {
            "file": ["../bob/b1.jpeg", str(tree / "alice/a1.jpg"), "../alice/a1.jpg", "../missing.jpg"],
            "who": ["Bob", "Alice", "Alice", ""],
        }
    ).to_csv(manifest, index=False)
    listing = list_inputs(InputConfig(uri=str(manifest), path_column="file", identity_column="who")).table
    # sorted, the duplicate a1 kept once, entries not filtered by existence (a missing one becomes a read_error row)
    assert (
        list_inputs(InputConfig(uri=str(manifest), path_column="file", identity_column="who")).duplicates == 1
    )
    assert listing["path"].tolist() == [
        str(tree / "alice/a1.jpg"),
        str(tree / "bob/b1.jpeg"),
        str(tree / "missing.jpg"),
    ]
    assert listing["identity"].tolist() == ["Alice", "Bob", None]


def test_parquet_manifest_without_identity(tree):
    manifest = tree / "m.parquet"
    pd.DataFrame({"path": ["bob/b1.jpeg", "alice/a2.PNG"], "other": [1, 2]}).to_parquet(manifest)
    listing = list_inputs(InputConfig(uri=str(manifest))).table
    assert listing["path"].tolist() == [str(tree / "alice/a2.PNG"), str(tree / "bob/b1.jpeg")]
    assert listing["identity"].tolist() == [None, None]
    with_folder = list_inputs(InputConfig(uri=str(manifest), identity_from_folder=True)).table
    assert with_folder["identity"].tolist() == ["alice", "bob"]


def test_clear_errors_name_the_uri(tree, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputListingError, match=f"input {missing}: does not exist"):
        list_inputs(InputConfig(uri=str(missing)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputListingError, match="empty: no image files among 0 file"):
        list_inputs(InputConfig(uri=str(tmp_path / "empty")))
    with pytest.raises(InputListingError, match="glob matched no image files"):
        list_inputs(InputConfig(uri=str(tree / "*.gif")))
    with pytest.raises(InputListingError, match="m.csv: does not exist"):
        list_inputs(InputConfig(uri=str(tmp_path / "m.csv")))
    manifest = tmp_path / "bad.csv"
    manifest.write_text("filename\nx.jpg\n")
    with pytest.raises(InputListingError, match=r"no column 'path' \(input.path_column\); columns: filename"):
        list_inputs(InputConfig(uri=str(manifest)))
    with pytest.raises(InputListingError, match="is a file"):
        list_inputs(InputConfig(uri=str(tree / "notes.txt")))


def test_input_digest_tracks_paths_identities_and_order():
    a = pd.DataFrame({"path": ["/x/1.jpg", "/x/2.jpg"], "identity": [None, "b"]})
    assert input_digest(a) == input_digest(a.copy())
    assert len(input_digest(a)) == 64
    changed_identity = a.assign(identity=["a", "b"])
    changed_path = a.assign(path=["/x/1.jpg", "/x/3.jpg"])
    reordered = a.iloc[::-1]
    digests = {input_digest(d) for d in (a, changed_identity, changed_path, reordered)}
    assert len(digests) == 4


def test_s3_prefix_glob_and_manifest(s3):  # noqa: F811 - the s3 fixture imported above
    fs = s3.filesystem()
    for rel in FILES:
        fs.pipe(f"{s3.bucket}/data/{rel}", rel.encode())
    fs.pipe(f"{s3.bucket}/data-other/x.jpg", b"x")  # a sibling prefix must not leak in
    listing = list_inputs(
        InputConfig(uri=s3.uri("data"), storage_options=s3.storage_options, identity_from_folder=True)
    ).table
    assert listing["path"].tolist() == [s3.uri("data", f) for f in IMAGES]
    assert listing["identity"].tolist() == ["alice", "alice", "sub", "bob"]

    globbed = list_inputs(InputConfig(uri=s3.uri("data/bob/*"), storage_options=s3.storage_options)).table
    assert globbed["path"].tolist() == [s3.uri("data/bob/b1.jpeg")]

    fs.pipe(f"{s3.bucket}/lists/m.csv", b"path\n../data/bob/b1.jpeg\ns3://other/abs.jpg\n")
    manifest = list_inputs(InputConfig(uri=s3.uri("lists/m.csv"), storage_options=s3.storage_options)).table
    assert manifest["path"].tolist() == [s3.uri("data/bob/b1.jpeg"), "s3://other/abs.jpg"]

    with pytest.raises(InputListingError, match=f"input {s3.uri('nothing')}: does not exist"):
        list_inputs(InputConfig(uri=s3.uri("nothing"), storage_options=s3.storage_options))


# ---- issue 13 items 3-10: nothing lost, nothing invented ----


def listed(uri, **options) -> list[str]:
    return list_inputs(InputConfig(uri=str(uri), **options)).table["path"].tolist()


def test_csv_unquoted_comma_is_a_parse_error_naming_the_line(tmp_path):
    # every data row has one field too many: pandas took the first column as the index and shifted the rest
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,identity\n/faces/Smith, John/1.jpg,Smith\n/faces/Smith, John/2.jpg,Smith\n")
    with pytest.raises(InputListingError, match=r"m.csv: line 2 has 3 field\(s\), the header has 2"):
        list_inputs(InputConfig(uri=str(manifest), identity_column="identity"))
    # one bad line among good ones: named by its own number
    manifest.write_text('path,identity\n"/faces/Smith, John/1.jpg",Smith\n/faces/a.jpg,A\n/b,c.jpg,B\n')
    with pytest.raises(InputListingError, match="line 4 has 3 field"):
        list_inputs(InputConfig(uri=str(manifest), identity_column="identity"))
    # a quoted field spanning two lines moves the numbering on; a stray quote is a parse error on its line
    manifest.write_text('path\n"/x/a\nb.jpg"\n"/x/c".jpg\n')
    with pytest.raises(InputListingError, match="m.csv: line 4: "):
        list_inputs(InputConfig(uri=str(manifest)))
    manifest.write_text('path,identity\n"/x/a\nb.jpg",A\n/x/c.jpg\n')
    with pytest.raises(InputListingError, match="line 4 has 1 field"):
        list_inputs(InputConfig(uri=str(manifest), identity_column="identity"))
    manifest.write_text("path\n/x/a.jpg\n\n/x/b.jpg\n")  # a blank line inside the data is not skipped
    with pytest.raises(InputListingError, match="line 3 has 0 field"):
        list_inputs(InputConfig(uri=str(manifest)))
    manifest.write_bytes(b"path\n/x/a.jpg\n/x/\xff.jpg\n")
    with pytest.raises(InputListingError, match="m.csv: line 3 is not UTF-8 text"):
        list_inputs(InputConfig(uri=str(manifest)))
    # quoted commas, a BOM and trailing line breaks are fine
    manifest.write_bytes('\ufeffpath,identity\n"/faces/Smith, John/1.jpg",Smith\n\n\n'.encode())
    listing = list_inputs(InputConfig(uri=str(manifest), identity_column="identity")).table
    assert listing.to_dict("list") == {"path": ["/faces/Smith, John/1.jpg"], "identity": ["Smith"]}


def test_null_or_empty_manifest_paths_are_refused_with_the_row(tmp_path):
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": ["/x/a.jpg", None, "/x/c.jpg"]}), parquet)
    with pytest.raises(InputListingError, match=r"m.parquet: null 'path' in data row 2$"):
        list_inputs(InputConfig(uri=str(parquet)))
    pq.write_table(pa.table({"path": ["/x/a.jpg", ""]}), parquet)
    with pytest.raises(InputListingError, match=r"empty 'path' in data row 2$"):
        list_inputs(InputConfig(uri=str(parquet)))
    pq.write_table(pa.table({"path": [1, 2]}), parquet)
    with pytest.raises(InputListingError, match=r"'path' in data row 1 is int 1, expected text"):
        list_inputs(InputConfig(uri=str(parquet)))
    csv_manifest = tmp_path / "m.csv"
    csv_manifest.write_text("path,identity\n/x/a.jpg,A\n,B\n")
    with pytest.raises(InputListingError, match=r"empty 'path' in data row 2 \(line 3\)"):
        list_inputs(InputConfig(uri=str(csv_manifest)))


def test_parquet_identities_nulls_stay_null_numbers_are_their_text(tmp_path):
    parquet = tmp_path / "m.parquet"
    paths = ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg"]
    pq.write_table(pa.table({"path": paths, "id": pa.array([2019, None, 7], pa.int64())}), parquet)
    listing = list_inputs(InputConfig(uri=str(parquet), identity_column="id")).table
    assert listing["identity"].tolist() == ["2019", None, "7"]
    # pandas writes an int column with a missing value as float64: still "2019", and NaN is a null
    pd.DataFrame({"path": paths, "id": [2019, None, 7]}).to_parquet(parquet)
    assert list_inputs(InputConfig(uri=str(parquet), identity_column="id")).table["identity"].tolist() == [
        "2019",
        None,
        "7",
    ]
    pq.write_table(pa.table({"path": paths, "id": ["nan", None, "None"]}), parquet)
    assert list_inputs(InputConfig(uri=str(parquet), identity_column="id")).table["identity"].tolist() == [
        "nan",
        None,
        "None",
    ]


def test_manifest_paths_are_used_exactly_as_written(tmp_path):
    names = ["trailing .jpg ", " leading.jpg", "inner  two.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"{name}\n" for name in names))
    paths = listed(manifest)
    assert paths == sorted(str(tmp_path / name) for name in names)
    blobs, errors = read_blobs(paths)
    assert errors == [None] * 3 and [b.decode() for b in blobs] == [os.path.basename(p) for p in paths]
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": names}), parquet)
    assert listed(parquet) == paths
    # the folder listing keeps them too (".jpg " ends in a space: not an image extension, counted as skipped)
    folder = list_inputs(InputConfig(uri=str(tmp_path)))
    assert folder.table["path"].tolist() == sorted(str(tmp_path / n) for n in names[1:])
    assert folder.skipped["extension"]["by_extension"] == {".csv": 1, ".jpg ": 1, ".parquet": 1}
    manifest.write_text("path\n/x/a.jpg\n   \n")
    with pytest.raises(InputListingError, match=r"blank \('   '\) 'path' in data row 2 \(line 3\)"):
        list_inputs(InputConfig(uri=str(manifest)))


def test_non_utf8_file_names_are_listed_digested_and_read(tmp_path):
    root = tmp_path / "in"
    (root / "ok").mkdir(parents=True)
    (root / "ok" / "a.jpg").write_bytes(b"plain")
    os.mkdir(os.fsencode(root) + b"/caf\xe9")
    fd = os.open(os.fsencode(root) + b"/caf\xe9/b\xff 1%.jpg", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"latin-1 name")
    os.close(fd)
    result = list_inputs(InputConfig(uri=str(root), identity_from_folder=True))
    # the undecodable name is rendered as a file:// URI with its bytes percent-encoded (RFC 8089)
    assert result.table.to_dict("list") == {
        "path": [str(root / "ok/a.jpg"), f"file://{root}/caf%E9/b%FF%201%25.jpg"],
        "identity": ["ok", "caf\\xe9"],
    }
    digest = input_digest(result.table)
    assert len(digest) == 64 and digest == input_digest(
        list_inputs(InputConfig(uri=str(root), identity_from_folder=True)).table
    )
    blobs, errors = read_blobs(result.table["path"].tolist())
    assert (blobs, errors) == ([b"plain", b"latin-1 name"], [None, None])
    # the output table (Parquet, UTF-8 strings) takes the rendering as it is
    pq.write_table(pa.Table.from_pandas(result.table), tmp_path / "out.parquet")
    # a manifest may name the file the same way; a glob finds it too
    (tmp_path / "m.csv").write_text(f"path\nfile://{root}/caf%E9/b%FF%201%25.jpg\n")
    assert listed(tmp_path / "m.csv") == [f"file://{root}/caf%E9/b%FF%201%25.jpg"]
    assert listed(root / "*" / "b*") == [f"file://{root}/caf%E9/b%FF%201%25.jpg"]


def test_existing_paths_with_glob_characters_are_read_as_themselves(tmp_path):
    for folder in ("faces [2019]", "what?", "star*"):
        (tmp_path / folder / "p").mkdir(parents=True)
        (tmp_path / folder / "p" / "1.jpg").write_bytes(b"x")
    (tmp_path / "faces 2").mkdir()  # what the pattern "faces [2019]" would match as a glob
    (tmp_path / "faces 2" / "2.jpg").write_bytes(b"x")
    for folder in ("faces [2019]", "what?", "star*"):
        result = list_inputs(InputConfig(uri=str(tmp_path / folder)))
        assert result.source == "folder"
        assert result.table["path"].tolist() == [str(tmp_path / folder / "p" / "1.jpg")]
    manifest = tmp_path / "faces [2019]" / "list[1].csv"
    manifest.write_text("path\np/1.jpg\n")
    result = list_inputs(InputConfig(uri=str(manifest)))
    assert (result.source, result.table["path"].tolist()) == (
        "manifest",
        [str(tmp_path / "faces [2019]/p/1.jpg")],
    )
    # a path that does not exist is a glob when it has glob characters
    globbed = list_inputs(InputConfig(uri=str(tmp_path / "faces [2]" / "*.jpg")))
    assert (globbed.source, globbed.table["path"].tolist()) == ("glob", [str(tmp_path / "faces 2/2.jpg")])
    with pytest.raises(InputListingError, match="list.csv: does not exist"):
        list_inputs(InputConfig(uri=str(tmp_path / "list.csv")))
    (tmp_path / "folder.csv").mkdir()  # a folder named like a manifest is a folder
    (tmp_path / "folder.csv" / "f.jpg").write_bytes(b"x")
    assert listed(tmp_path / "folder.csv") == [str(tmp_path / "folder.csv/f.jpg")]


def test_symlinked_folders_followed_once_and_counted(tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "o.jpg").write_bytes(b"o")
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "r.jpg").write_bytes(b"r")
    (root / "batch2.jpg").symlink_to(outside)  # a folder named like an image: entered, never a row
    (root / "linked").symlink_to(outside)  # the same real folder again: read once only
    (root / "real" / "loop").symlink_to(root)  # back to an ancestor
    (root / "alias").symlink_to(root / "real")  # a folder already listed under its own path
    (root / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "file_link.jpg").symlink_to(root / "real" / "r.jpg")
    result = list_inputs(InputConfig(uri=str(root)))
    assert result.table["path"].tolist() == [
        str(root / "batch2.jpg/sub/o.jpg"),
        str(root / "file_link.jpg"),
        str(root / "real/r.jpg"),
    ]
    assert result.followed_links == [str(root / "batch2.jpg")]
    assert result.skipped == {
        "broken_symlink": {"count": 1, "examples": [str(root / "broken.jpg")]},
        "symlink_loop": {"count": 1, "examples": [str(root / "real/loop")]},
        "symlink_to_listed_folder": {"count": 2, "examples": [str(root / "alias"), str(root / "linked")]},
    }
    assert result.summary()["skipped"]["total"] == 4 and result.summary()["followed_links"] == 1
    blobs, errors = read_blobs(result.table["path"].tolist())
    assert (blobs, errors) == ([b"o", b"r", b"r"], [None] * 3)


def tiny_image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_default_extensions_take_every_decodable_face_image_format_and_count_the_rest(tmp_path, caplog):
    formats = {
        "a.gif": "GIF",
        "b.avif": "AVIF",
        "c.jp2": "JPEG2000",
        "d.ppm": "PPM",
        "e.pgm": "PPM",
        "f.JPG": "JPEG",
        "g.tga": "TGA",
    }
    for name, fmt in formats.items():
        (tmp_path / name).write_bytes(tiny_image(fmt))
    for name in ("notes.txt", "scan.pdf", "README", "x.psd"):
        (tmp_path / name).write_bytes(b"-")
    assert {".gif", ".avif", ".jp2", ".j2k", ".ppm", ".pgm"} <= set(DEFAULT_EXTENSIONS)
    assert ".pdf" not in DEFAULT_EXTENSIONS and ".heic" not in DEFAULT_EXTENSIONS  # no HEIF plugin here
    with caplog.at_level(logging.WARNING, logger="froq_ray"):
        result = list_inputs(InputConfig(uri=str(tmp_path)))
    assert result.table["path"].tolist() == [str(tmp_path / n) for n in sorted(formats)]
    decoded = decode_batch([p.read_bytes() for p in sorted(tmp_path.iterdir()) if p.name in formats], 8)
    assert list(decoded.statuses) == ["ok"] * len(formats)
    assert result.skipped == {
        "extension": {
            "count": 4,
            "examples": [str(tmp_path / n) for n in ("README", "notes.txt", "scan.pdf", "x.psd")],
            "by_extension": {"(none)": 1, ".pdf": 1, ".psd": 1, ".txt": 1},
        }
    }
    assert (
        f"inputs from {tmp_path}: skipped 4 file(s): extension=4 ((none)=1, .pdf=1, .psd=1, .txt=1)"
        in caplog.text
    )


def test_duplicate_manifest_paths_warned_and_conflicting_identities_refused(tmp_path, caplog):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,who\na.jpg,A\n./a.jpg,A\nb.jpg,\nb.jpg,\n" + f"{tmp_path}/a.jpg,A\n")
    with caplog.at_level(logging.WARNING, logger="froq_ray"):
        result = list_inputs(InputConfig(uri=str(manifest), identity_column="who"))
    assert result.table.to_dict("list") == {
        "path": [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")],
        "identity": ["A", None],
    }
    assert result.duplicates == 3 and result.summary()["duplicates"] == 3 and result.files_seen == 5
    assert f"input manifest {manifest}: 3 duplicate row(s) name a path listed earlier" in caplog.text
    manifest.write_text("path,who\na.jpg,A\nc.jpg,C\n./a.jpg,B\n")
    with pytest.raises(
        InputListingError,
        match=(
            rf"path {tmp_path}/a.jpg has two identities: "
            r"'A' \(data row 1 \(line 2\)\) and 'B' \(data row 3 \(line 4\)\)"
        ),
    ):
        list_inputs(InputConfig(uri=str(manifest), identity_column="who"))
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": ["a.jpg", "a.jpg"], "who": ["A", None]}), parquet)
    with pytest.raises(
        InputListingError, match=r"has two identities: 'A' \(data row 1\) and None \(data row 2\)"
    ):
        list_inputs(InputConfig(uri=str(parquet), identity_column="who"))


def test_limit_counts_what_it_leaves_out(tree):
    result = list_inputs(InputConfig(uri=str(tree), limit=1))
    assert (len(result.table), result.beyond_limit) == (1, len(IMAGES) - 1)


def test_s3_glob_characters_manifest_errors_and_skips(s3):  # noqa: F811 - the s3 fixture imported above
    fs = s3.filesystem()
    fs.pipe(f"{s3.bucket}/faces [2019]/p/1.jpg", b"1")
    fs.pipe(f"{s3.bucket}/faces [2019]/p/notes.txt", b"n")
    fs.pipe(f"{s3.bucket}/faces 2/2.jpg", b"2")
    opts = s3.storage_options
    result = list_inputs(InputConfig(uri=s3.uri("faces [2019]"), storage_options=opts))
    assert result.table["path"].tolist() == [s3.uri("faces [2019]/p/1.jpg")]
    assert result.skipped["extension"] == {
        "count": 1,
        "examples": [s3.uri("faces [2019]/p/notes.txt")],
        "by_extension": {".txt": 1},
    }
    assert listed(s3.uri("faces [2]/*.jpg"), storage_options=opts) == [s3.uri("faces 2/2.jpg")]
    fs.pipe(f"{s3.bucket}/what?/m.csv", b"path,who\n../faces 2/2.jpg ,A\nx,y.jpg,B\n")
    with pytest.raises(InputListingError, match=r"what\?/m.csv: line 3 has 3 field"):
        list_inputs(InputConfig(uri=s3.uri("what?/m.csv"), storage_options=opts, identity_column="who"))
    fs.pipe(f"{s3.bucket}/what?/m.csv", b"path,who\n../faces 2/2.jpg ,A\n../faces 2/2.jpg ,A\n")
    result = list_inputs(InputConfig(uri=s3.uri("what?/m.csv"), storage_options=opts, identity_column="who"))
    assert result.table.to_dict("list") == {"path": [s3.uri("faces 2/2.jpg ")], "identity": ["A"]}
    assert result.duplicates == 1
    buffer = io.BytesIO()
    pq.write_table(pa.table({"path": ["a.jpg", None]}), buffer)
    fs.pipe(f"{s3.bucket}/m.parquet", buffer.getvalue())
    with pytest.raises(InputListingError, match="null 'path' in data row 2"):
        list_inputs(InputConfig(uri=s3.uri("m.parquet"), storage_options=opts))


def test_files_directly_in_the_input_folder_have_no_identity(tree, caplog):
    """identity_from_folder: ``--input /x/images`` gives /x/images/top.jpg no identity (not "images"); a glob's
    top folder is its leading folders without glob characters; a manifest's paths keep their folder's name."""
    (tree / "top.jpg").write_bytes(b"t")
    os.mkdir(os.fsencode(tree) + b"/\xff")  # an undecodable top-level name (a file:// rendering)
    with open(os.fsencode(tree) + b"/\xff/u.jpg", "wb") as f:
        f.write(b"u")
    with caplog.at_level(logging.WARNING, logger="froq_ray"):
        result = list_inputs(InputConfig(uri=str(tree) + "/", identity_from_folder=True))
    assert result.table.to_dict("list") == {
        "path": [*(str(tree / f) for f in IMAGES), str(tree / "top.jpg"), f"file://{tree}/%FF/u.jpg"],
        "identity": ["alice", "alice", "sub", "bob", None, "\\xff"],
    }
    assert result.no_identity == 1 and result.summary()["no_identity"] == 1
    assert "1 file(s) lie directly in the input folder" in caplog.text
    without = list_inputs(InputConfig(uri=str(tree)))
    assert without.no_identity == 0 and without.table["identity"].isna().all()
    glob_top = list_inputs(InputConfig(uri=str(tree / "*.jpg"), identity_from_folder=True))
    assert glob_top.table.to_dict("list") == {"path": [str(tree / "top.jpg")], "identity": [None]}
    glob_deep = list_inputs(InputConfig(uri=str(tree / "*" / "*"), identity_from_folder=True)).table
    assert glob_deep["identity"].tolist() == ["alice", "alice", "bob", "\\xff"]
    bob = list_inputs(InputConfig(uri=str(tree / "bob"), identity_from_folder=True)).table
    assert bob["identity"].tolist() == [None]  # the input folder itself is no identity folder
    manifest = tree / "m.csv"
    manifest.write_text("path\ntop.jpg\nbob/b1.jpeg\n")
    listed = list_inputs(InputConfig(uri=str(manifest), identity_from_folder=True)).table
    assert listed["identity"].tolist() == ["bob", tree.name]


def test_identities_that_read_like_a_missing_value_are_kept_as_typed_counted_and_warned(tmp_path, caplog):
    manifest = tmp_path / "m.csv"
    # what pandas' to_csv writes for a missing identity (NaN), and other tools' markers; "Nancy" is a name
    manifest.write_text(
        "path,identity\n/x/a.jpg,NaN\n/x/b.jpg,Nancy\n/x/c.jpg,\n/x/d.jpg,None\n/x/e.jpg,NaN\n/x/f.jpg, null \n"
    )
    with caplog.at_level(logging.WARNING, logger="froq_ray"):
        listing = list_inputs(InputConfig(uri=str(manifest), identity_column="identity"))
    assert listing.table["identity"].tolist() == ["NaN", "Nancy", None, "None", "NaN", " null "]
    expected = {"NaN": 2, "None": 1, " null ": 1}
    assert listing.missing_like_identities == expected
    assert listing.summary()["missing_like_identities"] == expected
    (line,) = [r.getMessage() for r in caplog.records if "read like a missing value" in r.getMessage()]
    assert "4 identity value(s)" in line and "'NaN' x2" in line and "leave the cell empty" in line
    plain = tmp_path / "plain.csv"
    plain.write_text("path,identity\n/x/a.jpg,Nan Goldin\n/x/b.jpg,Ada\n")
    assert list_inputs(InputConfig(uri=str(plain), identity_column="identity")).missing_like_identities == {}


def test_blank_and_spreadsheet_marker_identities_count_as_missing_like_and_nulls_as_no_identity(
    tmp_path, caplog
):
    # a CSV written by hand (not by pandas): only the EMPTY cell (c) is null; '  ' and '#N/A' are text
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(
        b"path,identity\n/x/a.jpg,  \n/x/b.jpg,#N/A\n/x/c.jpg,\n/x/d.jpg,Ada\n/x/e.jpg,#n/a\n/x/f.jpg,\t\n"
    )
    with caplog.at_level(logging.WARNING, logger="froq_ray"):
        listing = list_inputs(InputConfig(uri=str(manifest), identity_column="identity"))
    assert listing.table["identity"].tolist() == ["  ", "#N/A", None, "Ada", "#n/a", "\t"]
    expected = {"  ": 1, "#N/A": 1, "#n/a": 1, "\t": 1}
    assert (
        listing.missing_like_identities == expected
        and listing.summary()["missing_like_identities"] == expected
    )
    assert listing.no_identity == 1 and listing.summary()["no_identity"] == 1
    messages = [r.getMessage() for r in caplog.records]
    (like,) = [m for m in messages if "read like a missing value" in m]
    assert "4 identity value(s)" in like and "'  ' x1" in like and "'#N/A' x1" in like
    (null,) = [m for m in messages if "have no identity" in m]
    assert null.startswith(f"input manifest {manifest}: 1 row(s) have no identity ") and "'identity'" in null

    # Parquet: '' is a text as typed (kept, counted as missing-like); a null and a float NaN are nulls
    parquet = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"path": ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg", "/x/d.jpg"], "id": ["", None, " ", "Bo"]}),
        parquet,
    )
    listing = list_inputs(InputConfig(uri=str(parquet), identity_column="id"))
    assert listing.table["identity"].tolist() == ["", None, " ", "Bo"]
    assert listing.missing_like_identities == {"": 1, " ": 1}
    assert listing.no_identity == 1
    pq.write_table(
        pa.table({"path": ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg"], "id": [1.0, float("nan"), None]}), parquet
    )
    listing = list_inputs(InputConfig(uri=str(parquet), identity_column="id"))
    assert listing.table["identity"].tolist() == ["1", None, None] and listing.no_identity == 2

    # no identity asked for: no_identity stays 0 (the column is null by design, not missing)
    assert list_inputs(InputConfig(uri=str(parquet))).no_identity == 0
    assert list_inputs(InputConfig(uri=str(manifest))).no_identity == 0


@pytest.mark.parametrize(
    ("text", "like"),
    [
        ("", True),
        ("   ", True),
        ("#N/A", True),
        (" NaN ", True),
        ("NULL", True),
        ("-1.#IND", True),
        ("Nan Goldin", False),
        ("N/A Smith", False),
        ("0", False),
        (None, False),
    ],
)
def test_missing_like_texts(text, like):
    from froq_ray.storage.listing import missing_like

    assert missing_like(text) is like
