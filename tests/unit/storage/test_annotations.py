"""The one reader of annotation outputs (storage.annotations): files of folders / files / globs / keep-lists,
missing-column errors naming the writer, batches, the fixed-size-list -> float32 matrix, identities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from froq_ray.errors import UserError
from froq_ray.storage.annotations import (
    KEEP_LIST,
    AnnotationInputError,
    annotation_files,
    embedding_matrix,
    identities,
    iter_batches,
    list_matrix,
    read_table,
    require_columns,
)
from froq_ray.storage.schema import annotation_schema, to_table

DIM = 3


def write_part(path: Path, embeddings: list | np.ndarray, paths: list[str] | None = None) -> None:
    n = len(embeddings)
    paths = paths or [f"/faces/P{k % 2}/{path.stem}-{k}.jpg" for k in range(n)]
    columns = {
        "path": paths,
        "identity": [None if k == 1 else f"P{k % 2}" for k in range(n)],
        "status": ["ok"] * n,
        "error": [None] * n,
        "quality": np.arange(n, dtype=np.float32),
        "embedding": np.asarray(embeddings, dtype=np.float32),
        "width": np.full(n, 112, np.int32),
        "height": np.full(n, 112, np.int32),
        "model_id": ["m"] * n,
        "calibration_id": ["c"] * n,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(columns, annotation_schema(DIM)), path)


class JobError(UserError, ValueError):
    pass


def test_files_of_folders_files_globs_and_keep_lists(tmp_path):
    emb = np.ones((2, DIM))
    for name in ("part-00001.parquet", "part-00000.parquet"):
        write_part(tmp_path / "ann" / name, emb)
    (tmp_path / "ann" / "_froq").mkdir()
    (tmp_path / "ann" / "notes.parquet").write_bytes(b"not a part")
    write_part(tmp_path / "single.parquet", emb)
    parts = [str(tmp_path / "ann" / f"part-0000{k}.parquet") for k in (0, 1)]

    files = annotation_files([str(tmp_path / "ann"), str(tmp_path / "single.parquet")], {})
    assert [f.path for f in files] == [*parts, str(tmp_path / "single.parquet")]
    assert [f.uri for f in files] == [f.path for f in files]  # local: the plain path
    assert [f.path for f in annotation_files([str(tmp_path / "ann" / "part-*.parquet")], {})] == parts

    (tmp_path / "kept").mkdir()
    write_part(tmp_path / "kept" / KEEP_LIST, emb)
    assert [f.path for f in annotation_files([str(tmp_path / "kept")], {}, keep_lists=True)] == [
        str(tmp_path / "kept" / KEEP_LIST)
    ]
    with pytest.raises(AnnotationInputError, match=f"no annotation Parquet files in {tmp_path / 'kept'}$"):
        annotation_files([str(tmp_path / "kept")], {})  # a keep-list only when asked
    write_part(tmp_path / "kept" / "part-00000.parquet", emb)  # a folder with parts reads its parts
    assert [f.path for f in annotation_files([str(tmp_path / "kept")], {}, keep_lists=True)] == [
        str(tmp_path / "kept" / "part-00000.parquet")
    ]
    with pytest.raises(JobError, match=f"^annotations not found: {tmp_path / 'nope'}$"):
        annotation_files([str(tmp_path / "nope")], {}, error=JobError)


def test_missing_columns_name_the_file_the_writer_and_the_hint(tmp_path):
    write_part(tmp_path / "part-00000.parquet", np.ones((2, DIM)))
    (file,) = annotation_files([str(tmp_path / "part-00000.parquet")], {})
    schema = pq.read_schema(tmp_path / "part-00000.parquet")
    require_columns(file, schema, ["path", "embedding"])  # present: nothing raised
    with pytest.raises(JobError) as refused:
        require_columns(
            file, schema, ["path", "layer_norms", "sharpness"], hint="check job.column", error=JobError
        )
    message = str(refused.value)
    assert message.startswith(
        f"{file.uri}: no column(s) ['layer_norms', 'sharpness'] (columns: path, identity,"
    )
    assert "; layer_norms is written by calibrate; check job.column" in message and "\n" not in message
    assert "sharpness is written" not in message  # no writer known: none invented


def test_read_table_checks_first_and_reads_optional_columns_the_file_has(tmp_path):
    write_part(tmp_path / "part-00000.parquet", np.ones((2, DIM)))
    (file,) = annotation_files([str(tmp_path)], {})
    seen = []
    table = read_table(file, ["path", "quality"], optional=("model_id", "source_path"), check=seen.append)
    assert table.column_names == ["path", "quality", "model_id"]
    assert seen and seen[0].names[0] == "path"
    with pytest.raises(JobError, match="no column"):
        read_table(file, ["nope"], error=JobError)


def test_batches_and_matrices_equal_the_rows_written(tmp_path):
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(5, DIM)), rng.normal(size=(3, DIM))
    first[2] = 0.0  # all zero: no embedding
    first[3, 1] = np.nan  # not finite: written as a null row by to_table, no embedding either
    write_part(tmp_path / "part-00000.parquet", first)
    write_part(tmp_path / "part-00001.parquet", second)
    files = annotation_files([str(tmp_path)], {})
    batches = list(iter_batches(files, ["path", "embedding"], 2))
    assert [b.num_rows for b in batches] == [2, 2, 1, 2, 1]  # per file, at most 2 rows a batch
    matrices = [embedding_matrix(b.column("embedding")) for b in batches]
    matrix = np.concatenate([m for m, _ in matrices])
    present = np.concatenate([p for _, p in matrices])
    expected = np.concatenate([first, second]).astype(np.float32)
    assert matrix.dtype == np.float32 and matrix.shape == (8, DIM)
    keep = [0, 1, 4, 5, 6, 7]
    np.testing.assert_array_equal(matrix[keep], expected[keep])
    assert present.tolist() == [True, True, False, False, True, True, True, True]
    # a sliced array (offset) and a chunked column read the same rows
    column = pa.concat_arrays([b.column("embedding") for b in batches[3:]])
    np.testing.assert_array_equal(list_matrix(column.slice(1, 2)), expected[6:8])
    table = pa.concat_tables([pq.read_table(f.path, columns=["embedding"]) for f in files])
    chunked, mask = embedding_matrix(table.column("embedding"))
    np.testing.assert_array_equal(chunked[keep], expected[keep])
    assert mask.tolist() == present.tolist()
    with pytest.raises(TypeError, match="fixed_size_list"):
        list_matrix(pa.array([1.0, 2.0]))


def test_identities_from_a_column_the_folder_or_none():
    paths = ["/f/Ada/1.jpg", "s3://b/Bob/2.jpg", "/f/Cy/3.jpg"]
    assert identities(paths, "folder").tolist() == ["Ada", "Bob", "Cy"]
    assert identities(paths, "column", ["a", None, float("nan")]).tolist() == ["a", None, None]
    assert identities(paths, "none").tolist() == [None, None, None]
    assert identities(paths, "column", ["a", "b", "c"]).dtype == object
    with pytest.raises(ValueError, match="identity source"):
        identities(paths, "column")
