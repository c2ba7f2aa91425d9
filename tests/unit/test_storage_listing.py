"""Input listing: local folders, globs, CSV/Parquet manifests, s3:// prefixes on the local S3 server."""

from __future__ import annotations

import pandas as pd
import pytest

from froq_ray.config import InputConfig
from froq_ray.storage.listing import InputListingError, input_digest, list_inputs
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
    listing = list_inputs(InputConfig(uri=str(tree)))
    assert list(listing.columns) == ["path", "identity"]
    assert listing["path"].tolist() == [str(tree / f) for f in IMAGES]
    assert listing["identity"].isna().all()


def test_identity_from_folder_and_limit(tree):
    listing = list_inputs(InputConfig(uri=str(tree), identity_from_folder=True, limit=3))
    assert listing["path"].tolist() == [str(tree / f) for f in IMAGES[:3]]
    assert listing["identity"].tolist() == ["alice", "alice", "sub"]


def test_extensions_configurable_case_insensitive(tree):
    listing = list_inputs(InputConfig(uri=str(tree), extensions=["PNG", ".TXT"]))
    assert listing["path"].tolist() == [str(tree / "alice/a2.PNG"), str(tree / "notes.txt")]


def test_local_glob(tree):
    listing = list_inputs(InputConfig(uri=str(tree / "alice" / "*")))
    assert listing["path"].tolist() == [str(tree / "alice/a1.jpg"), str(tree / "alice/a2.PNG")]
    recursive = list_inputs(InputConfig(uri=str(tree / "**" / "*.webp")))
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
    listing = list_inputs(InputConfig(uri=str(manifest), path_column="file", identity_column="who"))
    # sorted, the duplicate a1 kept once, entries not filtered by existence (a missing one becomes a read_error row)
    assert listing["path"].tolist() == [
        str(tree / "alice/a1.jpg"),
        str(tree / "bob/b1.jpeg"),
        str(tree / "missing.jpg"),
    ]
    assert listing["identity"].tolist() == ["Alice", "Bob", None]


def test_parquet_manifest_without_identity(tree):
    manifest = tree / "m.parquet"
    pd.DataFrame({"path": ["bob/b1.jpeg", "alice/a2.PNG"], "other": [1, 2]}).to_parquet(manifest)
    listing = list_inputs(InputConfig(uri=str(manifest)))
    assert listing["path"].tolist() == [str(tree / "alice/a2.PNG"), str(tree / "bob/b1.jpeg")]
    assert listing["identity"].tolist() == [None, None]
    with_folder = list_inputs(InputConfig(uri=str(manifest), identity_from_folder=True))
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


def test_s3_prefix_glob_and_manifest(s3):  # noqa: F811
    fs = s3.filesystem()
    for rel in FILES:
        fs.pipe(f"{s3.bucket}/data/{rel}", rel.encode())
    fs.pipe(f"{s3.bucket}/data-other/x.jpg", b"x")  # a sibling prefix must not leak in
    listing = list_inputs(
        InputConfig(uri=s3.uri("data"), storage_options=s3.storage_options, identity_from_folder=True)
    )
    assert listing["path"].tolist() == [s3.uri("data", f) for f in IMAGES]
    assert listing["identity"].tolist() == ["alice", "alice", "sub", "bob"]

    globbed = list_inputs(InputConfig(uri=s3.uri("data/bob/*"), storage_options=s3.storage_options))
    assert globbed["path"].tolist() == [s3.uri("data/bob/b1.jpeg")]

    fs.pipe(f"{s3.bucket}/lists/m.csv", b"path\n../data/bob/b1.jpeg\ns3://other/abs.jpg\n")
    manifest = list_inputs(InputConfig(uri=s3.uri("lists/m.csv"), storage_options=s3.storage_options))
    assert manifest["path"].tolist() == [s3.uri("data/bob/b1.jpeg"), "s3://other/abs.jpg"]

    with pytest.raises(InputListingError, match=f"input {s3.uri('nothing')}: does not exist"):
        list_inputs(InputConfig(uri=s3.uri("nothing"), storage_options=s3.storage_options))
