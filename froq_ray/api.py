"""The public Python API: score face images in this process, without Ray.

::

    import froq_ray

    scorer = froq_ray.Scorer.load()  # dlib_resnet_v1 + its shipped calibration, CUDA when visible
    df = scorer.score(["faces/a.jpg", "s3://bucket/b.png"])  # one row per input, as the annotate job writes

:class:`Scorer` runs the annotate job's own pieces on the rows you give it: the read stage
(:func:`froq_ray.storage.reader.read_blobs` through fsspec, ``storage_options`` as in the jobs), the decode stage
(:func:`froq_ray.imaging.decode.decode_batch`), the scoring actor (:class:`froq_ray.engine.stages.ScoringStage`
in ``froq`` mode, the model and calibration checked as the job checks them) and the write stage's table
(:func:`froq_ray.engine.write.shard_table`). So ``score`` returns exactly the columns, dtypes, values and statuses
of ``pandas.read_parquet`` on an annotate output of the same images, and a bad image is a row with its
``status`` and ``error``, never an exception. Nothing here imports Ray; for a stage in your own Ray Data
pipeline see :func:`froq_ray.ray_stage` (:mod:`froq_ray.user_stage`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import AfterValidator, Field

from .config import BUILTIN, ConfigError, LocalOrUri, Section, resolve_local_path, validate_section
from .errors import UserError
from .quality.artifact import ArtifactError
from .vocabulary import Device, Precision

log = logging.getLogger("froq_ray")

MODE = "froq"
"""The scoring mode of the API: FROQ quality (+ the embedding) with a calibration artifact."""

Images = Sequence[str | os.PathLike] | Sequence[bytes] | Sequence[np.ndarray] | np.ndarray
"""What :meth:`Scorer.score` and :meth:`Scorer.score_table` take: paths or URIs, encoded images (``bytes``),
uint8 RGB arrays (H, W, 3), or one uint8 array (N, H, W, 3)."""


class ScorerInputError(UserError, TypeError):
    """What was given to :meth:`Scorer.score` is not a list of paths, a list of encoded images or a uint8
    image array (the message names the item and what it is)."""


def _artifact_location(value: str) -> str:
    return value if value == BUILTIN else resolve_local_path(value)


class ScorerSettings(Section):
    """The settings of a :class:`Scorer` (and of :func:`froq_ray.ray_stage`), validated like a job config:
    an unknown or bad value is a :class:`~froq_ray.config.ConfigError` naming it."""

    model: str = "dlib_resnet_v1"
    """A registry name (``froq models``)."""
    weights: LocalOrUri | None = None
    """The model's weights file; None = the model's built-in weights."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The model family's options (``model.options`` in a job config)."""
    calibration: Annotated[str, Field(min_length=1), AfterValidator(_artifact_location)] = BUILTIN
    """``builtin`` (the calibration shipped for the model) or a ``calibration.json`` path / URI."""
    device: Device = "auto"
    precision: Precision = "fp32"
    quality_only: bool = False
    """Stop the forward pass after the deepest selected layer: no ``embedding`` column."""
    batch_size: int = Field(default=128, ge=1)
    """Images per forward pass (``resources.model_batch_size``); also the rows read and decoded at a time."""
    storage_options: dict[str, Any] = Field(default_factory=dict)
    """fsspec options for reading image paths and the calibration artifact (``input.storage_options``)."""


def scorer_settings(**settings: Any) -> ScorerSettings:
    """The validated settings; :class:`~froq_ray.config.ConfigError` naming each bad keyword."""
    return validate_section(ScorerSettings, settings, source="froq_ray.Scorer")


def _check_device(device: str) -> None:
    """:class:`~froq_ray.config.ConfigError` naming ``device`` when it is ``cuda`` and torch sees no CUDA."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            [
                "device: 'cuda' requested but torch sees no CUDA device here; use 'auto' (CUDA when visible) or 'cpu'"
            ],
            source="froq_ray.Scorer",
        )


class Scorer:
    """A loaded model + calibration that scores images in this process. Build it with :meth:`load`."""

    def __init__(self, settings: ScorerSettings) -> None:
        """Load the model and the calibration artifact (checked against the model), then the scoring stage.

        Raises :class:`~froq_ray.config.ConfigError` naming ``device`` for ``cuda`` when torch sees no CUDA
        device in this process, :class:`~froq_ray.models.base.ModelLoadError` (unknown model, missing or unfit
        weights), :class:`~froq_ray.quality.artifact.ArtifactError` (no such artifact, a folder, a file that is
        no calibration.json, or one made for another model)."""
        from .engine.modes import scoring_mode
        from .engine.stages import DecodeStageConfig, ScoringStage, ScoringStageConfig
        from .pipeline.artifacts import read_artifact

        self.settings = settings
        _check_device(settings.device)
        self._mode = scoring_mode(MODE)
        base = ScoringStageConfig(
            mode=MODE,
            model_name=settings.model,
            model_weights=settings.weights,
            model_options=dict(settings.options),
            storage_options=dict(settings.storage_options),
            device=settings.device,
            precision=settings.precision,
            quality_only=settings.quality_only,
            write_embedding=not settings.quality_only,
            model_batch_size=settings.batch_size,
        )
        model = self._mode.load_model(base)
        artifact = read_artifact(settings.calibration, model, settings.storage_options)
        self.calibration_id: str = artifact.calibration_id
        cfg = dataclasses.replace(base, artifact_json=artifact.to_json())
        self._stage = ScoringStage(cfg)
        self.model_id: str = self._stage.model.model_id
        self.device: str = self._stage.device
        self.schema: pa.Schema = self._mode.output_schema(self._stage.model, cfg)
        """The Arrow schema of :meth:`score_table` (the annotate job's Parquet schema for these settings)."""
        self._constants = self._mode.constants(self._stage.model, self.calibration_id)
        self._decode = DecodeStageConfig(storage_options=dict(settings.storage_options))

    @classmethod
    def load(
        cls,
        model: str = "dlib_resnet_v1",
        *,
        weights: str | os.PathLike | None = None,
        options: Mapping[str, Any] | None = None,
        calibration: str | os.PathLike = BUILTIN,
        device: str = "auto",
        precision: str = "fp32",
        quality_only: bool = False,
        batch_size: int = 128,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Scorer:
        """A scorer for ``model`` (registry name, ``weights`` file or its built-in weights, family ``options``)
        with ``calibration`` (``"builtin"`` or a ``calibration.json`` path/URI made for this model).

        ``device``: ``auto`` (CUDA when torch sees one), ``cpu`` or ``cuda``; ``precision``: ``fp32``, ``bf16``,
        ``fp16``; ``quality_only``: no embedding; ``batch_size``: images per forward pass; ``storage_options``:
        fsspec options for image paths and the artifact (e.g. S3 credentials or ``endpoint_url``).
        Raises :class:`~froq_ray.config.ConfigError` for a bad setting (naming it),
        :class:`~froq_ray.quality.artifact.ArtifactError` for a ``calibration`` that is no path (None, say),
        and what :class:`Scorer` raises while loading."""
        if not isinstance(calibration, (str, os.PathLike)):
            raise ArtifactError(
                f"calibration must be 'builtin' or a calibration.json path / URI, got {calibration!r}"
            )
        settings = scorer_settings(
            model=model,
            weights=None if weights is None else os.fspath(weights),
            options=dict(options or {}),
            calibration=os.fspath(calibration),
            device=device,
            precision=precision,
            quality_only=quality_only,
            batch_size=batch_size,
            storage_options=dict(storage_options or {}),
        )
        return cls(settings)

    def score(
        self,
        images: Images,
        *,
        identities: Sequence[str | None] | None = None,
        names: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Score ``images``; one row per item, in order, with the annotate job's columns and dtypes.

        ``images``: a list of paths or URIs (``str`` / ``os.PathLike``, read through fsspec with the scorer's
        ``storage_options``; ``path`` holds each exactly as given), a list of encoded images (``bytes``), a list
        of uint8 RGB arrays (H, W, 3), or one uint8 array (N, H, W, 3). Arrays are encoded losslessly (PNG) and
        then decoded like a file, so every input goes through the job's decode: resized to 112 x 112 when it is
        another size, ``width`` / ``height`` the size given. ``names``: the ``path`` of each row for bytes and
        arrays (default ``bytes[i]`` / ``array[i]``); ``identities``: the ``identity`` column (default null).

        Columns: ``path``, ``identity``, ``status``, ``error``, ``quality`` (float32), ``embedding`` (a float32
        array (D,) per row, None where not scored; left out with ``quality_only``), ``width``, ``height`` (int32),
        ``model_id``, ``calibration_id``. A missing or unreadable path is ``read_error``, bad bytes are
        ``empty`` / ``not_an_image`` / ``corrupt``, a model failure on one image ``model_error``: each with its
        ``error`` message and null ``quality``, never an exception.
        Raises :class:`ScorerInputError` for an input that is none of these (naming the item), or ``names`` /
        ``identities`` of another length."""
        return self.score_table(images, identities=identities, names=names).to_pandas()

    def score_table(
        self,
        images: Images,
        *,
        identities: Sequence[str | None] | None = None,
        names: Sequence[str] | None = None,
    ) -> pa.Table:
        """:meth:`score` as an Arrow table of :attr:`schema` (``embedding`` a ``fixed_size_list<float32>``)."""
        kind, items = _classify(images)
        n = len(items)
        identities = _aligned(identities, n, "identities")
        if kind == "path":
            if names is not None:
                raise ScorerInputError("names are for bytes and arrays: a path is its own name")
            labels = [os.fspath(p) for p in items]
        else:
            labels = _aligned(names, n, "names") if names is not None else [f"{kind}[{i}]" for i in range(n)]
        tables = [
            self._score_rows(kind, items[i : i + self.settings.batch_size], labels, identities, i)
            for i in range(0, n, self.settings.batch_size)
        ]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def _score_rows(
        self, kind: str, items: list[Any], labels: list[str], identities: list[str | None], start: int
    ) -> pa.Table:
        from .engine.stages import arrow_to_columns, read_and_decode
        from .engine.write import shard_table

        stop = start + len(items)
        rows = {
            "row": np.arange(start, stop, dtype=np.int64),
            "path": np.asarray(labels[start:stop], dtype=object),
            "identity": np.asarray(identities[start:stop], dtype=object),
        }
        if kind == "path":
            batch = read_and_decode(rows, self._decode)  # the job's read + decode stage
        else:
            blobs = items if kind == "bytes" else [_png(a) for a in items]
            batch = {**rows, **_decoded_columns(blobs, self._decode.crop_size)}
        return shard_table(arrow_to_columns(self._stage(batch)), self.schema, self._constants)

    def __repr__(self) -> str:
        return f"Scorer(model_id={self.model_id!r}, calibration_id={self.calibration_id!r}, device={self.device!r})"


def _classify(images: Any) -> tuple[str, list[Any]]:
    """(``path`` | ``bytes`` | ``array``, the items as a list); :class:`ScorerInputError` otherwise."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ScorerInputError(
                f"an image array must be uint8 (N, H, W, 3) RGB, got {images.dtype} {images.shape}"
            )
        return "array", list(images)
    if isinstance(images, (str, bytes, bytearray, os.PathLike)):
        raise ScorerInputError(
            f"give a list of images, not one {type(images).__name__} (e.g. scorer.score([image]))"
        )
    try:
        items = list(images)
    except TypeError:
        raise ScorerInputError(
            f"images must be a list of paths, of encoded images (bytes) or of uint8 (H, W, 3) arrays, or a "
            f"uint8 (N, H, W, 3) array; got {type(images).__name__}"
        ) from None
    kinds = [_kind(item, i) for i, item in enumerate(items)]
    if len(set(kinds)) > 1:
        first = {k: kinds.index(k) for k in dict.fromkeys(kinds)}
        shown = ", ".join(f"item {i} is {k}" for k, i in first.items())
        raise ScorerInputError(f"images mixes kinds ({shown}): give one list per kind")
    return (kinds[0] if kinds else "path"), items


def _kind(item: Any, i: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return "path"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3:
            raise ScorerInputError(
                f"item {i}: an image array must be uint8 (H, W, 3), got {item.dtype} {item.shape}"
            )
        return "array"
    raise ScorerInputError(
        f"item {i}: expected a path, encoded image bytes or a uint8 (H, W, 3) array, got {type(item).__name__}"
    )


def _aligned(values: Sequence[Any] | None, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes)):
        raise ScorerInputError(
            f"{name} must be a list with one entry per image, not one {type(values).__name__}"
        )
    values = list(values)
    if len(values) != n:
        raise ScorerInputError(f"{name} has {len(values)} entries for {n} image(s)")
    for i, value in enumerate(values):
        if not (isinstance(value, str) or (value is None and name == "identities")):
            allowed = "text or None" if name == "identities" else "text"
            raise ScorerInputError(f"{name}[{i}] must be {allowed}, got {type(value).__name__} {value!r}")
    return values


def _png(array: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) array as a PNG (lossless: decoding it gives the same pixels back)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _decoded_columns(blobs: list[bytes], crop_size: int) -> dict[str, np.ndarray]:
    """The decode stage's columns for in-memory encoded images (what :func:`read_and_decode` adds after its read)."""
    from .engine.stages import PIXELS
    from .imaging.decode import decode_batch

    decoded = decode_batch([bytes(b) for b in blobs], crop_size)
    return {
        PIXELS: decoded.pixels,
        "status": np.asarray(decoded.statuses, dtype=object),
        "error": np.asarray(decoded.errors, dtype=object),
        "width": np.asarray(decoded.widths, dtype=np.int32),
        "height": np.asarray(decoded.heights, dtype=np.int32),
    }
