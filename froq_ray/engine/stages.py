"""Ray Data stages: a stage is a small frozen config plus a callable that Ray runs per batch.

The stages wrap the engine-independent core (imaging, quality); they hold no Ray calls themselves, so
they can be unit-tested on plain dicts of numpy arrays. Resources are declared on the stage config and
applied in one place (``engine.dataset``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import status as st
from ..vocabulary import Graph, MemoryFormat, Precision

if TYPE_CHECKING:
    from ..config import DistillJob, ModelJobBase

log = logging.getLogger(__name__)

PIXELS = "pixels"
GRAPH_COLUMN = "_graph"
"""Per-row name of the observed graph that scored the row (``mode: froq``), summarised per shard by the write
stage for the run manifest; not written."""
PASSTHROUGH = ("row", "shard", "shard_start", "shard_stop", "path", "identity")
TEXT_COLUMNS = ("path", "identity", "status", "error", "source_path", "degradation")
"""Text columns that travel between stages. Ray Data turns an all-null object column (``identity`` without an
identity source, ``error`` in a batch where every row decoded) into a float NaN column between stages, so
:func:`columns_to_arrow` restores these as Arrow strings with real nulls (never the text ``"nan"``)."""


@dataclass(frozen=True)
class DecodeStageConfig:
    """CPU stage: read each object's bytes and decode to uint8 RGB crops of ``crop_size``.

    ``crop_size``: ``int`` pixels (crops are (crop_size, crop_size, 3) uint8); ``storage_options``: fsspec
    options for the images' location; ``num_cpus``: Ray CPUs per task. Frozen. A read or decode failure
    becomes the row's ``status``/``error`` (:func:`read_and_decode`), never an exception."""

    crop_size: int = 112
    storage_options: dict[str, Any] = field(default_factory=dict)
    num_cpus: float = 1.0


def read_and_decode(batch: dict[str, np.ndarray], cfg: DecodeStageConfig) -> dict[str, np.ndarray]:
    """paths -> bytes -> pixels; a failed read or decode becomes that row's status, never an exception."""
    from ..imaging.decode import decode_batch
    from ..storage.reader import read_blobs

    paths = [str(p) for p in batch["path"]]
    blobs, read_errors = read_blobs(paths, cfg.storage_options)
    decoded = decode_batch(blobs, cfg.crop_size)
    statuses = list(decoded.statuses)
    errors = list(decoded.errors)
    for i, err in enumerate(read_errors):
        if blobs[i] is None:
            statuses[i], errors[i] = st.READ_ERROR, err or "object could not be read"
    out = {k: batch[k] for k in PASSTHROUGH if k in batch}
    out.update(
        {
            PIXELS: decoded.pixels,
            "status": np.asarray(statuses, dtype=object),
            "error": np.asarray(errors, dtype=object),
            "width": np.asarray(decoded.widths, dtype=np.int32),
            "height": np.asarray(decoded.heights, dtype=np.int32),
        }
    )
    return out


@dataclass(frozen=True)
class ReadStageConfig:
    """CPU task per shard: the shard's (path, identity) rows from the run's input parts (``_froq/inputs/`` in
    the output location), then :func:`read_and_decode`.

    ``out_uri`` / ``out_storage_options``: the output location holding the input parts; ``decode``: the
    :class:`DecodeStageConfig`. Frozen. :func:`read_shard` raises ``ValueError`` for a batch of more than one
    shard or an input part shorter than the shard (a changed output)."""

    out_uri: str
    out_storage_options: dict[str, Any]
    decode: DecodeStageConfig


def read_shard(batch: dict[str, np.ndarray], cfg: ReadStageConfig) -> dict[str, np.ndarray]:
    """One shard descriptor (``shard``, ``part``, ``start``, ``stop``, ``row0``: see
    :class:`froq_ray.engine.inputs.InputRange`) -> its decoded rows with global ``row`` indices, the shard's
    bounds on every row, and per-row shares of the read and decode seconds (``_t_read``, ``_t_decode``)."""
    import time

    from ..storage.fs import open_fs
    from .inputs import InputRange, read_range

    if len(batch["shard"]) != 1:
        raise ValueError(f"read_shard takes one shard per batch, got {len(batch['shard'])}")
    r = InputRange(
        str(batch["part"][0]), int(batch["start"][0]), int(batch["stop"][0]), int(batch["row0"][0])
    )
    started = time.perf_counter()
    fs, path = open_fs(cfg.out_uri, cfg.out_storage_options)
    rows = read_range(fs, path, r)
    n = rows.num_rows
    row0, shard = r.row0, int(batch["shard"][0])
    listed = {
        "row": np.arange(row0, row0 + n, dtype=np.int64),
        "shard": np.full(n, shard, dtype=np.int64),
        "shard_start": np.full(n, row0, dtype=np.int64),
        "shard_stop": np.full(n, row0 + n, dtype=np.int64),
        "path": np.asarray(rows.column("path").to_pylist(), dtype=object),
        "identity": np.asarray(rows.column("identity").to_pylist(), dtype=object),
    }
    read_s = time.perf_counter() - started
    out = read_and_decode(listed, cfg.decode)
    out["_t_read"] = np.full(n, read_s / max(n, 1))
    out["_t_decode"] = np.full(n, (time.perf_counter() - started - read_s) / max(n, 1))
    return out


@dataclass(frozen=True)
class ScoringStageConfig:
    """GPU/CPU actor stage. ``mode``: a name in :data:`froq_ray.engine.modes.MODES` (froq: quality + embedding,
    pseudo_label: perturbation FIQA, calibrate: pseudo-labels + every candidate layer's norm, student: a
    distilled student's quality); the mode builds the actor's model and per-batch runner.

    ``model_name``/``model_weights``/``model_options``: the registry model; ``artifact_json``: the calibration
    artifact as JSON text (froq); ``device``: ``auto``/``cpu``/``cuda[:i]``; ``precision``: ``fp32``/``bf16``/
    ``fp16``; ``model_batch_size``: images per forward pass; ``perturbation``: pseudo-label settings (a dict);
    ``candidate_layers``: the calibrate mode's layers; ``num_gpus``/``num_cpus``: Ray resources per actor;
    ``actors``: ``(min, max)`` actor pool size. Frozen and picklable (it travels to every actor); invalid values
    raise when the actor builds its model or runner (``UnknownScoringModeError``, ``ModelLoadError``,
    ``ValueError``), not here."""

    mode: str
    model_name: str
    model_weights: str | None
    model_options: dict[str, Any]
    artifact_json: str | None = None
    student_artifact: str | None = None
    """``mode: student``: the student artifact folder (read with ``storage_options``)."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    precision: Precision = "fp32"
    quality_only: bool = False
    write_embedding: bool = True
    model_batch_size: int = 128
    memory_format: MemoryFormat = "auto"
    """``auto`` (= channels_last, NCHW where a network does not allow it) | ``channels_last`` | ``contiguous``."""
    compile: bool = False
    """``torch.compile`` the scoring network (checked against eager on a batch; falls back when it fails)."""
    graph: Graph = "auto"
    """``mode: froq``'s observed forward pass: ``auto`` | ``frozen`` | ``eager``
    (:func:`froq_ray.quality.scorer.resolve_graph`)."""
    perturbation: dict[str, Any] = field(default_factory=dict)
    candidate_layers: tuple[str, ...] | None = None
    degraded_copies: int = 0
    """``calibrate_labelled``: seeded degraded copies observed per image (``calibration.degraded_copies``)."""
    degraded_seed: int = 0
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    actors: tuple[int, int] = (1, 1)
    """Scoring actors (min, max): Ray Data autoscales the pool between them."""

    @classmethod
    def from_job(
        cls,
        job: ModelJobBase | DistillJob,
        mode: str,
        *,
        artifact_json: str | None = None,
        candidate_layers: tuple[str, ...] | None = None,
        **overrides: Any,
    ) -> ScoringStageConfig:
        """The one mapping from a job config to its scoring stage (``mode``: a ScoringMode name).

        Every model job (calibrate, annotate) takes ``model``, the ``resources`` of the actors and the whole
        ``scoring`` section (precision, quality_only, write_embedding, graph, memory_format, compile,
        perturbation, student_artifact) with ``input.storage_options``. The distill job's teacher (self-training
        copies) takes ``model``, ``resources``, ``self_training.precision`` / ``perturbation`` and writes no
        embedding; the other scoring settings keep their defaults. ``overrides`` set fields on top (e.g. the
        teacher's ``quality_only``)."""
        r = job.resources
        common: dict[str, Any] = {
            "mode": mode,
            "model_name": job.model.name,
            "model_weights": job.model.weights,
            "model_options": dict(job.model.options),
            "artifact_json": artifact_json,
            "candidate_layers": candidate_layers,
            "device": r.device,
            "model_batch_size": r.model_batch_size,
            "num_gpus": r.num_gpus_per_actor,
            "num_cpus": r.num_cpus_per_actor,
            "actors": r.actor_range,
        }
        from ..config import ModelJobBase as ModelJob

        if isinstance(job, ModelJob):
            s = job.scoring
            section: dict[str, Any] = {
                "student_artifact": s.student_artifact,
                "storage_options": dict(job.input.storage_options),
                "precision": s.precision,
                "quality_only": s.quality_only,
                "write_embedding": s.write_embedding,
                "graph": s.graph,
                "memory_format": s.memory_format,
                "compile": s.compile,
                "perturbation": s.perturbation.model_dump(),
            }
        else:
            t = job.self_training
            section = {
                "precision": t.precision,
                "write_embedding": False,
                "perturbation": t.perturbation.model_dump(),
            }
        return cls(**{**common, **section, **overrides})


def expected_actor_device(cfg: ScoringStageConfig) -> str:
    """The device an actor of ``cfg`` will use, as the driver can tell: Ray hides GPUs from actors that
    reserve none, so ``auto`` means CUDA exactly when the actor reserves a GPU."""
    if cfg.device == "auto":
        return "cuda" if cfg.num_gpus > 0 else "cpu"
    return cfg.device


def scoring_settings(cfg: ScoringStageConfig, graphs_used: Sequence[str] = ()) -> dict[str, Any]:
    """The speed-relevant settings of a scoring stage, for the run manifest. ``graph`` (``mode: froq``; None
    otherwise) is what the actors are set to run (``graph_requested`` resolved for their device);
    ``graph_used`` lists the graphs the actors of this run reported (``graphs_used``: ``eager`` where the
    frozen graph failed its check), empty when no shard was scored."""
    from ..quality.accelerate import resolve_graph, resolve_memory_format

    device = expected_actor_device(cfg)
    froq = cfg.mode == "froq"
    return {
        "device": device,
        "memory_format": resolve_memory_format(cfg.memory_format),
        "compile_requested": cfg.compile,
        "graph_requested": cfg.graph if froq else None,
        "graph": resolve_graph(cfg.graph, device, cfg.precision, cfg.compile) if froq else None,
        "graph_used": sorted(set(graphs_used)),
        "model_batch_size": cfg.model_batch_size,
        "transfer": "uint8 crops, pinned + non_blocking, normalised on the device"
        if device == "cuda"
        else "uint8 crops, normalised in the actor",
    }


def load_scoring_model(cfg: ScoringStageConfig):
    """The network a scoring stage runs, as its mode loads it (:meth:`~froq_ray.engine.modes.ScoringMode.load_model`:
    a registry FR model, or a student artifact in ``mode: student``)."""
    from .modes import scoring_mode

    return scoring_mode(cfg.mode).load_model(cfg)


class ScoringStage:
    """Loads the model once per actor; each call scores the rows whose decode succeeded.

    A Ray Data callable class. ``__call__`` takes one shard as a numpy batch (``pixels`` uint8 (N, H, W, 3),
    ``status``/``error`` object (N,) and the passthrough columns) and returns a ``pyarrow.Table`` of the same N
    rows with the mode's float32 result columns added ((N,) or (N, D); NaN for rows not ok) and ``_t_score``.
    A batch whose scoring raises is retried image by image, and an image that still fails gets status
    ``model_error`` with the exception text: scoring never raises for bad data. The constructor raises what
    loading the model raises (``ModelLoadError``, ``UnknownScoringModeError``); ``columns_to_arrow`` raises
    ``TypeError`` for a text column holding a non-text value."""

    def __init__(self, cfg: ScoringStageConfig) -> None:
        self.cfg = cfg
        from ..models.inference import resolve_device

        self.device = resolve_device(cfg.device, "resources.device")
        self.model = load_scoring_model(cfg)
        self.model.network.to(self.device)
        self.graph: str | None = None
        """The observed graph this actor runs (``frozen`` / ``eager``), set by a mode that has one (froq)."""
        self._runner = self._build_runner()
        log.info("scoring stage ready: %s on %s (%s)", self.model.model_id, self.device, cfg.mode)

    def _build_runner(self):
        """A callable: uint8 crops (N, H, W, 3) -> dict of float32 result columns, built by the stage's mode
        (:meth:`~froq_ray.engine.modes.ScoringMode.build_runner`)."""
        from .modes import scoring_mode

        return scoring_mode(self.cfg.mode).build_runner(self)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        pixels = batch.pop(PIXELS)
        status = np.asarray(batch["status"], dtype=object)
        error = np.asarray(batch["error"], dtype=object)
        ok = np.flatnonzero(status == st.OK)
        columns: dict[str, np.ndarray] = {}
        if ok.size:
            try:
                columns = self._score(pixels[ok])
            except Exception as exc:  # noqa: BLE001 - retried item by item: one bad image fails alone
                log.warning("batch of %d failed (%s); retrying item by item", ok.size, exc)
                columns, failed = self._score_one_by_one(pixels, ok)
                for i, msg in failed.items():
                    status[i], error[i] = st.MODEL_ERROR, msg
        batch["status"], batch["error"] = status, error
        batch.update(_scatter(columns, ok, len(status)))
        batch["_t_score"] = np.full(len(status), (time.perf_counter() - started) / max(len(status), 1))
        if self.graph is not None:
            batch[GRAPH_COLUMN] = np.full(len(status), self.graph, dtype=object)
        return columns_to_arrow(batch)

    def _score(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self._runner(pixels)

    def _score_one_by_one(
        self, pixels: np.ndarray, ok: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[int, str]]:
        parts: list[dict[str, np.ndarray]] = []
        failed: dict[int, str] = {}
        for i in ok:
            try:
                parts.append(self._score(pixels[i : i + 1]))
            except Exception as exc:  # noqa: BLE001 - any model failure becomes that row's status
                failed[int(i)] = f"{type(exc).__name__}: {exc}"
                parts.append({})
        names = sorted({k for p in parts for k in p})
        cols = {}
        for name in names:
            template = next(p[name] for p in parts if name in p)
            filler = np.full((1,) + template.shape[1:], np.nan, dtype=np.float32)
            cols[name] = np.concatenate([p.get(name, filler) for p in parts]).astype(np.float32)
        return cols, failed


def columns_to_arrow(columns: dict[str, np.ndarray]):
    """Scored rows as an Arrow table; (N, D) arrays become plain fixed-size lists (Ray's tensor extension
    type is avoided: converting its sliced, combined chunks back to numpy fails in Ray 2.58). Object columns
    and :data:`TEXT_COLUMNS` become strings: ``None`` / NaN -> null, text kept exactly
    (:func:`froq_ray.storage.schema.text_values`; ``TypeError`` for a value that is neither)."""
    import pyarrow as pa

    from ..storage.schema import text_values

    arrays = {}
    for name, values in columns.items():
        values = np.asarray(values)
        if values.ndim == 2:
            flat = pa.array(np.ascontiguousarray(values).reshape(-1))
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        elif values.dtype == object or name in TEXT_COLUMNS:
            arrays[name] = pa.array(text_values(values, name), type=pa.string())
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def arrow_to_columns(table) -> dict[str, np.ndarray]:
    """The inverse of :func:`columns_to_arrow`: fixed-size lists back to (N, D) float32 arrays (null rows NaN),
    string and null-typed columns to object arrays of ``str`` / ``None``, :data:`TEXT_COLUMNS` that arrive as
    floats (all null) to object arrays of ``None``, the rest via ``to_numpy``."""
    import pyarrow as pa

    from ..storage.schema import text_values

    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            size = column.type.list_size
            values = column.values.slice(column.offset * size, len(column) * size)
            matrix = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), size)
            if column.null_count:
                matrix[column.is_null().to_numpy(zero_copy_only=False)] = np.nan
            out[name] = matrix
        elif (
            pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)
            or pa.types.is_null(column.type)
            or name in TEXT_COLUMNS
        ):
            out[name] = np.asarray(text_values(column.to_pylist(), name), dtype=object)
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out


def _scatter(columns: dict[str, np.ndarray], rows: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Place per-ok-row results into full-length float32 columns, NaN where a row was not scored."""
    out = {}
    for name, values in columns.items():
        values = np.asarray(values, dtype=np.float32)
        full = np.full((n,) + values.shape[1:], np.nan, dtype=np.float32)
        full[rows] = values
        out[name] = full
    return out
