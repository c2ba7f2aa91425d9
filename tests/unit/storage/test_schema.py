"""Output schema: tables round-trip through Parquet and plain pandas, embeddings as float32 arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from froq_ray import status as st
from froq_ray.storage.schema import (
    PSEUDO_LABEL_COLUMNS,
    SCHEMA_VERSION,
    annotation_schema,
    frame_to_table,
    read_metadata,
    schema_metadata,
    to_table,
)


def make_columns(n: int, dim: int | None, rng: np.random.Generator) -> dict:
    ok = np.array([True, False, True, True, False])[:n]
    quality = rng.random(n).astype(np.float32)
    quality[~ok] = np.nan
    columns = {
        "path": [f"s3://b/{i}.jpg" for i in range(n)],
        "identity": ["a", None, "b", "a", None][:n],
        "status": [st.OK if k else st.CORRUPT for k in ok],
        "error": [None if k else "truncated" for k in ok],
        "quality": quality,
        "width": np.array([112, 0, 250, 112, 0][:n], dtype=np.int32),
        "height": np.array([112, 0, 250, 112, 0][:n], dtype=np.int32),
        "model_id": ["dlib_resnet_v1"] * n,
        "calibration_id": ["cal-1"] * n,
    }
    if dim is not None:
        emb = rng.standard_normal((n, dim)).astype(np.float32)
        emb[~ok] = np.nan
        columns["embedding"] = emb
    for name in PSEUDO_LABEL_COLUMNS:
        columns[name] = np.where(ok, rng.random(n), np.nan).astype(np.float32)
    return columns


def nullable(series: pd.Series) -> list:
    """Values with pandas' missing markers (None or NaN, depending on the pandas version) as None."""
    return [None if pd.isna(v) else v for v in series]


@pytest.mark.parametrize("dim", [128, 512])
def test_round_trip_through_plain_pandas(tmp_path, dim):
    rng = np.random.default_rng(dim)
    columns = make_columns(5, dim, rng)
    schema = annotation_schema(dim, list(PSEUDO_LABEL_COLUMNS))
    table = to_table(columns, schema, schema_metadata("digest123", "dlib_resnet_v1", "cal-1"))
    pq.write_table(table, tmp_path / "part.parquet")

    df = pd.read_parquet(tmp_path / "part.parquet")
    assert list(df.columns) == [f.name for f in schema]
    assert df["path"].tolist() == columns["path"]
    assert nullable(df["identity"]) == columns["identity"]
    assert df["status"].tolist() == ["ok", "corrupt", "ok", "ok", "corrupt"]
    assert nullable(df["error"]) == [None, "truncated", None, None, "truncated"]
    ok = df["status"] == "ok"
    np.testing.assert_array_equal(
        df.loc[ok, "quality"].to_numpy(np.float32), columns["quality"][ok.to_numpy()]
    )
    assert df.loc[~ok, "quality"].isna().all()
    for i in range(5):
        value = df["embedding"][i]
        if ok[i]:
            assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == (dim,)
            np.testing.assert_array_equal(value, columns["embedding"][i])
        else:
            assert value is None
    np.testing.assert_array_equal(np.stack(df.loc[ok, "embedding"]), columns["embedding"][ok.to_numpy()])
    for name in PSEUDO_LABEL_COLUMNS:
        np.testing.assert_array_equal(df.loc[ok, name].to_numpy(np.float32), columns[name][ok.to_numpy()])

    file_schema = pq.read_schema(tmp_path / "part.parquet")
    assert file_schema.field("embedding").type == pa.list_(pa.float32(), dim)
    assert file_schema.field("width").type == pa.int32() and file_schema.field("quality").type == pa.float32()
    assert read_metadata(file_schema) == {
        "froq_ray.schema_version": SCHEMA_VERSION,
        "froq_ray.config_digest": "digest123",
        "froq_ray.model_id": "dlib_resnet_v1",
        "froq_ray.calibration_id": "cal-1",
    }


def test_without_embedding_and_list_input():
    rng = np.random.default_rng(0)
    columns = make_columns(3, None, rng)
    columns = {k: v for k, v in columns.items() if k not in PSEUDO_LABEL_COLUMNS}
    schema = annotation_schema(None, [])
    assert "embedding" not in schema.names and not set(PSEUDO_LABEL_COLUMNS) & set(schema.names)
    table = to_table(columns, schema)
    assert table.num_rows == 3 and table.schema.metadata is None

    listed = dict(columns, embedding=[np.ones(4), None, [0.5, 0.5, 0.5, 0.5]])
    table = to_table(listed, annotation_schema(4, []))
    assert table.column("embedding").to_pylist() == [[1.0] * 4, None, [0.5] * 4]


def test_to_table_rejects_mismatches():
    rng = np.random.default_rng(1)
    columns = make_columns(5, 8, rng)
    schema = annotation_schema(8, list(PSEUDO_LABEL_COLUMNS))
    with pytest.raises(ValueError, match=r"missing \['quality'\]"):
        to_table({k: v for k, v in columns.items() if k != "quality"}, schema)
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        to_table(dict(columns, extra=[0] * 5), schema)
    with pytest.raises(ValueError, match="different lengths"):
        to_table(dict(columns, path=columns["path"][:4]), schema)
    with pytest.raises(ValueError, match=r"shape \(N, 8\)"):
        to_table(dict(columns, embedding=np.zeros((5, 7), np.float32)), schema)
    with pytest.raises(ValueError, match="duplicates a column"):
        annotation_schema(8, ["quality"])


def test_text_nulls_are_nulls_and_text_is_kept_exactly(tmp_path):
    """None, float NaN (what Ray makes of an all-None column) and pd.NA become Parquet nulls; the text "nan"
    (a person's folder name) stays the text "nan"; a number in a text column is refused, never str()-ed."""
    n = 4
    columns = {
        "path": [f"/in/nan/{i}.jpg" for i in range(n)],
        "identity": np.array(["nan", np.nan, None, pd.NA], dtype=object),
        "status": [st.OK] * n,
        "error": np.full(n, np.nan, dtype=np.float32),  # an all-null text column that arrived as floats
        "quality": np.ones(n, np.float32),
        "width": np.full(n, 112, np.int32),
        "height": np.full(n, 112, np.int32),
        "model_id": ["m"] * n,
        "calibration_id": [None] * n,
    }
    pq.write_table(to_table(columns, annotation_schema(None)), tmp_path / "part.parquet")
    table = pq.read_table(tmp_path / "part.parquet")
    assert table.column("identity").to_pylist() == ["nan", None, None, None]
    assert table.column("identity").null_count == 3
    assert table.column("error").null_count == n and table.column("calibration_id").null_count == n
    assert table.schema.field("error").type == pa.string()
    df = pd.read_parquet(tmp_path / "part.parquet")
    assert df["identity"].isna().tolist() == [False, True, True, True] and df["identity"][0] == "nan"
    assert df["error"].isna().all() and df["calibration_id"].isna().all()

    columns["identity"] = ["a", 7, None, None]
    with pytest.raises(TypeError, match="column 'identity' row 1: expected text or null, got int 7"):
        to_table(columns, annotation_schema(None))


def test_frame_to_table_types_all_null_columns_as_text():
    frame = pd.DataFrame({"path": ["/a", "/b"], "identity": [None, None], "score": [1.0, np.nan]})
    table = frame_to_table(frame)
    assert table.schema.field("identity").type == pa.string() and table.column("identity").null_count == 2
    assert table.schema.field("score").type == pa.float64() and table.column("path").to_pylist() == [
        "/a",
        "/b",
    ]
