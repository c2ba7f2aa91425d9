"""Text columns between Ray stages: an all-null text column that Ray Data hands over as float NaN (as it does
with an all-None object column) is restored as a string column of nulls; text, "nan" included, is kept."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from froq_ray.engine.stages import arrow_to_columns, columns_to_arrow


def test_float_nan_text_columns_become_string_nulls_and_round_trip():
    batch = {
        "row": np.arange(3, dtype=np.int64),
        "path": np.array(["/in/nan/0.jpg", "/in/a/1.jpg", "/in/a/2.jpg"], dtype=object),
        "identity": np.array(["nan", None, "a"], dtype=object),
        "status": np.array(["ok", "ok", "ok"], dtype=object),
        "error": np.full(3, np.nan, dtype=np.float32),  # how Ray delivers an all-None error column
        "degradation": np.full(3, np.nan, dtype=np.float64),
        "quality": np.array([0.5, np.nan, 1.0], dtype=np.float32),
        "embedding": np.arange(6, dtype=np.float32).reshape(3, 2),
    }
    table = columns_to_arrow(batch)
    for name in ("path", "identity", "status", "error", "degradation"):
        assert table.schema.field(name).type == pa.string(), name
    assert table.column("identity").to_pylist() == ["nan", None, "a"]
    assert table.column("error").null_count == 3 and table.column("degradation").null_count == 3
    assert table.schema.field("quality").type == pa.float32()

    back = arrow_to_columns(table)
    assert back["identity"].dtype == object and back["identity"].tolist() == ["nan", None, "a"]
    assert back["error"].tolist() == [None, None, None]
    np.testing.assert_array_equal(back["embedding"], batch["embedding"])
    np.testing.assert_array_equal(back["row"], batch["row"])


def test_arrow_to_columns_reads_null_typed_and_float_text_columns_as_none():
    table = pa.table({"identity": pa.nulls(2), "error": pa.array([np.nan, np.nan]), "quality": [1.0, 2.0]})
    columns = arrow_to_columns(table)
    assert columns["identity"].tolist() == [None, None] and columns["error"].tolist() == [None, None]
    assert columns["quality"].dtype == np.float64
