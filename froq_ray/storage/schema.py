"""The output Parquet schema: one row per input image, readable by plain ``pandas.read_parquet``.

Columns: ``path``, ``identity``, ``status``, ``error``, ``quality``, optional ``embedding``
(``fixed_size_list<float32, D>``; pandas reads each as a float32 numpy array), ``width``, ``height``,
``model_id``, ``calibration_id``, then any extra float32 columns (the pseudo-label columns where computed).
The Parquet key-value metadata carries the schema version, config digest, model id, calibration id, the
score kind (what ``quality`` means: :data:`SCORE_KINDS`) and its direction (``froq_ray.score_direction``:
:data:`SCORE_DIRECTIONS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"

META_SCHEMA_VERSION = b"froq_ray.schema_version"
META_CONFIG_DIGEST = b"froq_ray.config_digest"
META_MODEL_ID = b"froq_ray.model_id"
META_CALIBRATION_ID = b"froq_ray.calibration_id"
META_SCORE_KIND = b"froq_ray.score_kind"
META_SCORE_DIRECTION = b"froq_ray.score_direction"

SCORE_KINDS = (
    "froq_quality",
    "pseudo_label",
    "student_prediction",
    "calibration_pseudo_label",
    "embedding_norm",
)
"""What a part's ``quality`` column holds, by scoring mode (``froq_ray.engine.modes``): FROQ quality with a
calibration; the perturbation pseudo-label; a distilled student's prediction (in its teacher's units); the
pseudo-label a calibrate job observes; the L2 norm of the FR embedding (a labelled-target calibrate job's
observation, which computes no pseudo-label)."""

SCORE_DIRECTIONS = {kind: "higher_is_better" for kind in SCORE_KINDS}
"""Which way each score kind points: for every kind a higher ``quality`` means a more useful image for
recognition (FROQ norms and linear observers are fitted to targets where higher is better; pseudo-labels and
embedding norms are similarities / confidences). ``quality_percentile`` follows ``quality``'s direction."""

PSEUDO_LABEL_COLUMNS = ("pl_flip", "pl_noise", "pl_occlusion", "pseudo_label")
"""Perturbation components and their mean, written when the job computed them."""

EMBEDDING = "embedding"


def annotation_schema(embedding_dim: int | None, extra_float_columns: Sequence[str] = ()) -> pa.Schema:
    """The output schema; ``embedding_dim=None`` leaves out the embedding column."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("identity", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("quality", pa.float32()),
    ]
    if embedding_dim is not None:
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        fields.append(pa.field(EMBEDDING, pa.list_(pa.float32(), embedding_dim)))
    fields += [
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("model_id", pa.string()),
        pa.field("calibration_id", pa.string()),
    ]
    taken = {f.name for f in fields}
    for name in extra_float_columns:
        if name in taken:
            raise ValueError(f"extra column {name!r} duplicates a column")
        taken.add(name)
        fields.append(pa.field(name, pa.float32()))
    return pa.schema(fields)


def schema_metadata(
    config_digest: str, model_id: str, calibration_id: str | None, score_kind: str | None = None
) -> dict[bytes, bytes]:
    """The Parquet key-value metadata every shard carries; ``score_kind`` (one of :data:`SCORE_KINDS`) is left
    out when None (a schema from :func:`with_score_kind` carries it itself). ``ValueError`` for another kind."""
    meta = {
        META_SCHEMA_VERSION: SCHEMA_VERSION.encode(),
        META_CONFIG_DIGEST: config_digest.encode(),
        META_MODEL_ID: model_id.encode(),
        META_CALIBRATION_ID: (calibration_id or "").encode(),
    }
    if score_kind is not None:
        meta.update(score_kind_metadata(score_kind))
    return meta


def score_kind_metadata(score_kind: str) -> dict[bytes, bytes]:
    """``{froq_ray.score_kind: score_kind, froq_ray.score_direction: its direction}``; ``ValueError`` unless
    ``score_kind`` is one of :data:`SCORE_KINDS`."""
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"score kind must be one of {', '.join(SCORE_KINDS)}, got {score_kind!r}")
    return {META_SCORE_KIND: score_kind.encode(), META_SCORE_DIRECTION: SCORE_DIRECTIONS[score_kind].encode()}


def with_score_kind(schema: pa.Schema, score_kind: str) -> pa.Schema:
    """``schema`` with ``froq_ray.score_kind`` and ``froq_ray.score_direction`` added to its key-value metadata
    (kept by :func:`to_table`, so every part written with this schema says what its ``quality`` means)."""
    return schema.with_metadata({**(schema.metadata or {}), **score_kind_metadata(score_kind)})


def written_schema(schema: pa.Schema) -> pa.Schema:
    """The schema a Parquet reader (``pq.read_schema``) sees in a part written with ``schema``: an empty table
    round-tripped through ``pq.write_table`` with its defaults (as ``storage.shards.write_shard`` writes). It
    differs from ``schema`` in the item name of list columns (Parquet's ``element`` for Arrow's ``item``)."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    return pq.read_schema(pa.BufferReader(sink.getvalue()))


def to_table(
    columns: Mapping[str, np.ndarray | Sequence[Any]],
    schema: pa.Schema,
    metadata: Mapping[str | bytes, str | bytes] | None = None,
) -> pa.Table:
    """Build a table of ``schema`` from one array or list per column (every schema column, nothing else).

    Nulls: ``None`` in any column; NaN in float columns; in string columns also a float NaN or ``pd.NA``
    (what Ray Data and pandas make of an all-null text column), never the text ``"nan"``. A string stays exactly
    as given (a person named ``"nan"`` stays ``"nan"``). ``embedding`` is an (N, D) float array (a row with any
    NaN becomes null) or a list of length-D vectors / None.

    The table's metadata is the schema's own (e.g. :func:`with_score_kind`) updated with ``metadata``.

    Raises ``ValueError`` when the columns do not match the schema or differ in length, ``TypeError`` naming
    the column and row when a string column holds something that is neither text nor null.
    """
    missing = [f.name for f in schema if f.name not in columns]
    unknown = [name for name in columns if schema.get_field_index(name) < 0]
    if missing or unknown:
        raise ValueError(f"columns do not match the schema: missing {missing}, unknown {unknown}")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns have different lengths: {lengths}")
    arrays = [_column(columns[f.name], f) for f in schema]
    meta = {**(schema.metadata or {}), **{_bytes(k): _bytes(v) for k, v in (metadata or {}).items()}}
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(meta) if meta else schema)


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as an Arrow table for a Parquet file (``pa.Table.from_pandas``, no index), with a column that
    holds only nulls typed ``string`` instead of Arrow's ``null`` type (every column the jobs write that way is
    text: ``identity``, ``nearest_identity``, notes...), so readers see a nullable text column, not a null one."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, column in enumerate(table.columns):
        if pa.types.is_null(column.type):
            table = table.set_column(i, pa.field(table.field(i).name, pa.string()), column.cast(pa.string()))
    return table


def read_metadata(schema: pa.Schema) -> dict[str, str]:
    """The ``froq_ray.*`` metadata of a Parquet file's schema as text (``pq.read_schema(path)``)."""
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if k.startswith(b"froq_ray.")}


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _column(values: np.ndarray | Sequence[Any], field: pa.Field) -> pa.Array:
    if pa.types.is_fixed_size_list(field.type):
        return _embedding_array(values, field.type.list_size)
    if pa.types.is_floating(field.type):
        return pa.array(_floats(values), type=field.type, from_pandas=True)
    if pa.types.is_integer(field.type):
        return pa.array(_as_list(values), type=field.type)
    return pa.array(text_values(values, field.name), type=field.type)


def is_null(value: Any) -> bool:
    """True for the null markers a text column may carry: ``None``, a float NaN, ``pd.NA`` / ``NaT``."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return value is pd.NA or value is pd.NaT


def text_values(values: np.ndarray | Iterable[Any], name: str = "column") -> list[str | None]:
    """A text column as a list of ``str`` or ``None``: null markers (:func:`is_null`) become ``None``, strings
    are kept exactly (numpy ``str_`` as plain ``str``); ``bytes`` are decoded as UTF-8. Raises ``TypeError``
    naming ``name`` and the row for any other value (a number is not silently turned into text)."""
    out: list[str | None] = []
    for i, value in enumerate(_as_list(values)):
        if isinstance(value, str):
            out.append(str(value))
        elif isinstance(value, bytes):
            out.append(value.decode("utf-8"))
        elif is_null(value):
            out.append(None)
        else:
            raise TypeError(
                f"column {name!r} row {i}: expected text or null, got {type(value).__name__} {value!r}"
            )
    return out


def _floats(values: np.ndarray | Sequence[Any]) -> np.ndarray:
    """float32 array with None -> NaN (and NaN -> null via ``from_pandas``)."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.astype(np.float32, copy=False)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float32)


def _as_list(values: np.ndarray | Iterable[Any]) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _embedding_array(values: np.ndarray | Sequence[Any], dim: int) -> pa.FixedSizeListArray:
    if isinstance(values, np.ndarray) and values.dtype != object:
        matrix = np.asarray(values, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != dim:
            raise ValueError(f"embedding must have shape (N, {dim}), got {matrix.shape}")
        null = np.isnan(matrix).any(axis=1)
    else:
        rows = list(values)
        null = np.array([r is None for r in rows], dtype=bool)
        matrix = np.zeros((len(rows), dim), dtype=np.float32)
        for i, row in enumerate(rows):
            if row is not None:
                vec = np.asarray(row, dtype=np.float32).reshape(-1)
                if vec.size != dim:
                    raise ValueError(f"embedding row {i} has {vec.size} values, expected {dim}")
                matrix[i] = vec
    flat = pa.array(np.ascontiguousarray(matrix).reshape(-1), type=pa.float32())
    mask = pa.array(null, type=pa.bool_()) if null.any() else None
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask)
