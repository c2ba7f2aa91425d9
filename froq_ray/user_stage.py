"""FROQ scoring as a stage of your own Ray Data pipeline: ``ds.map_batches(**froq_ray.ray_stage(...))``.

:func:`ray_stage` returns a :class:`RayStage`: the callable class (:class:`ScorerActor`, one
:class:`froq_ray.Scorer` loaded per actor), its constructor kwargs, and the resources (``num_cpus``,
``num_gpus``, ``concurrency``) plus ``batch_size`` and ``batch_format``, as the keyword arguments of
``Dataset.map_batches``. Each output row is its input row (every column kept) with the annotate job's columns
added (``path``, ``identity``, ``status``, ``error``, ``quality``, ``embedding``, ``width``, ``height``,
``model_id``, ``calibration_id``: a column of yours with one of these names is replaced). A bad image is a row
with its status, never a failed task.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from .errors import UserError
from .vocabulary import Precision


class RayStageError(UserError, ValueError):
    """A ``ray_stage`` setting or a batch column that cannot be used (the message names it)."""


class ScorerActor:
    """The callable class of :func:`ray_stage`: loads a :class:`froq_ray.Scorer` once per actor, then maps
    Arrow batches (``batch_format="pyarrow"``).

    ``input_column``: paths / URIs (string), encoded images (binary) or uint8 image tensors (N, H, W, 3);
    ``identity_column``: optional text column copied to ``identity``; ``name_column``: for bytes and arrays,
    the column that names each row in ``path`` (default: ``path`` when the batch has one, else ``bytes[i]`` /
    ``array[i]`` within the batch)."""

    def __init__(
        self,
        scorer: dict[str, Any],
        input_column: str = "path",
        identity_column: str | None = None,
        name_column: str | None = None,
    ) -> None:
        from .api import Scorer, ScorerSettings

        self.scorer = Scorer(ScorerSettings.model_validate(scorer))
        self.input_column = input_column
        self.identity_column = identity_column
        self.name_column = name_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        images = _column_values(batch, self.input_column)
        identities = (
            _column(batch, self.identity_column).to_pylist() if self.identity_column is not None else None
        )
        names = None
        if not _is_text(_column(batch, self.input_column)):
            name_column = self.name_column or ("path" if "path" in batch.column_names else None)
            if name_column is not None:
                names = [str(v) for v in _column(batch, name_column).to_pylist()]
        scored = self.scorer.score_table(images, identities=identities, names=names)
        out = batch
        for name in scored.column_names:
            column = scored.column(name)
            if name in out.column_names:
                out = out.set_column(out.column_names.index(name), scored.schema.field(name), column)
            else:
                out = out.append_column(scored.schema.field(name), column)
        return out


@dataclass(frozen=True)
class RayStage(Mapping):
    """The keyword arguments of ``Dataset.map_batches`` for FROQ scoring; a mapping, so
    ``ds.map_batches(**stage)`` works, and each is an attribute (``stage.fn``, ``stage.num_gpus``...)."""

    fn: type
    fn_constructor_kwargs: dict[str, Any]
    num_cpus: float
    num_gpus: float
    concurrency: int | tuple[int, int]
    batch_size: int
    batch_format: str = "pyarrow"
    _names: ClassVar[tuple[str, ...]] = (
        "fn",
        "fn_constructor_kwargs",
        "num_cpus",
        "num_gpus",
        "concurrency",
        "batch_size",
        "batch_format",
    )

    def __getitem__(self, key: str) -> Any:
        if key not in self._names:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def ray_stage(
    model: str = "dlib_resnet_v1",
    *,
    weights: str | None = None,
    options: Mapping[str, Any] | None = None,
    calibration: str = "builtin",
    device: str = "auto",
    precision: Precision = "fp32",
    quality_only: bool = False,
    model_batch_size: int = 128,
    storage_options: Mapping[str, Any] | None = None,
    input_column: str = "path",
    identity_column: str | None = None,
    name_column: str | None = None,
    batch_size: int = 256,
    num_gpus: float | None = None,
    num_cpus: float = 1.0,
    concurrency: int | tuple[int, int] = 1,
) -> RayStage:
    """The ``map_batches`` arguments that score ``input_column`` of each row with FROQ (see the module doc).

    Scorer settings as :meth:`froq_ray.Scorer.load` (``model_batch_size`` is its ``batch_size``: images per
    forward pass), validated here on the driver. ``batch_size``: rows per Ray batch; ``num_gpus``: per actor
    (default 1 when ``device="cuda"``, else 0; ``device="auto"`` uses the GPU exactly when the actor reserves
    one, as Ray hides the others); ``num_cpus`` per actor; ``concurrency``: actors, a count or ``(min, max)``.
    Raises :class:`~froq_ray.config.ConfigError` for a bad scorer setting and :class:`RayStageError` for a bad
    resource, naming it. Nothing is loaded or started here: each actor loads the model when Ray creates it."""
    from .api import scorer_settings

    settings = scorer_settings(
        model=model,
        weights=weights,
        options=dict(options or {}),
        calibration=calibration,
        device=device,
        precision=precision,
        quality_only=quality_only,
        batch_size=model_batch_size,
        storage_options=dict(storage_options or {}),
    )
    gpus = (1.0 if settings.device == "cuda" else 0.0) if num_gpus is None else float(num_gpus)
    if gpus < 0 or num_cpus <= 0:
        raise RayStageError(f"num_gpus must be >= 0 and num_cpus > 0 (got {num_gpus!r}, {num_cpus!r})")
    if settings.device == "cuda" and gpus == 0:
        raise RayStageError("device='cuda' needs num_gpus > 0 (Ray hides GPUs from actors that reserve none)")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise RayStageError(f"batch_size must be an integer >= 1 (got {batch_size!r})")
    values: list[object] = list(concurrency) if isinstance(concurrency, (tuple, list)) else [concurrency]
    counts = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 1]
    if len(counts) != len(values) or len(counts) not in (1, 2) or counts != sorted(counts):
        raise RayStageError(
            f"concurrency must be a count >= 1 or (min, max) with min <= max (got {concurrency!r})"
        )
    pair = isinstance(concurrency, (tuple, list))
    return RayStage(
        fn=ScorerActor,
        fn_constructor_kwargs={
            "scorer": settings.model_dump(mode="json"),
            "input_column": input_column,
            "identity_column": identity_column,
            "name_column": name_column,
        },
        num_cpus=float(num_cpus),
        num_gpus=gpus,
        concurrency=(counts[0], counts[1]) if pair else counts[0],
        batch_size=batch_size,
    )


def _column(batch: pa.Table, name: str) -> pa.ChunkedArray:
    if name not in batch.column_names:
        raise RayStageError(f"the batch has no column {name!r} (columns: {', '.join(batch.column_names)})")
    return batch.column(name)


def _is_text(column: pa.ChunkedArray) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def _column_values(batch: pa.Table, name: str) -> Any:
    """The scorer input held in column ``name``: paths (text), encoded images (binary) or image arrays."""
    column = _column(batch, name)
    if _is_text(column) or pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return column.to_pylist()
    values = column.to_numpy() if hasattr(column, "to_numpy") else np.asarray(column)
    if isinstance(values, np.ndarray) and values.dtype == object:
        return list(values)  # variable-shaped tensors: one (H, W, 3) array each
    return values
