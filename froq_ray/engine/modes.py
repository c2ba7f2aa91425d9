"""Scoring modes as objects: what a scoring run computes, writes and needs, asked of the mode, never of a string.

A :class:`ScoringMode` per mode in :data:`MODES`:

========================  ===================  =================  =================================================
mode                      needs a calibration  ``quality`` is     extra columns
========================  ===================  =================  =================================================
``froq``                  yes                  froq_quality       ``embedding`` (unless ``write_embedding: false``),
                                                                  ``quality_percentile``
``pseudo_label``          no                   pseudo_label       ``pl_flip, pl_noise, pl_occlusion, pseudo_label``
``student``               no (and no FR model) student_prediction none
``calibrate``             no (it makes one)    calibration_       the pseudo-label columns + ``layer_norms``
                                               pseudo_label
``calibrate_labelled``    no (it makes one)    embedding_norm     ``embedding``, ``layer_norms`` (+ ``degraded_
                                                                  layer_norms``, ``degraded_embedding``)
========================  ===================  =================  =================================================

:meth:`ScoringMode.output_schema` is the one place the written schema is decided: ``annotate``, ``calibrate``,
``plan`` and the distill job's self-training copies all call it, so ``froq plan`` prints what a run writes. The
schema carries ``froq_ray.score_kind`` and ``froq_ray.score_direction`` in its key-value metadata, and so does every
Parquet part written with it.

``quality_percentile`` (froq): float32 0-100, the share of the calibration set scoring lower than the image
(:meth:`~froq_ray.quality.artifact.CalibrationArtifact.percentile`, read off the artifact's 1,001 quantiles).
The column is always in the froq schema, so outputs of every calibration have the same columns; it is null on
every row when the artifact stores no quantiles (artifacts of schema version 1, made before percentiles).

Plain Python (no Ray): the scoring actor (:class:`~froq_ray.engine.stages.ScoringStage`) asks its mode for the
model (:meth:`ScoringMode.load_model`) and the per-batch runner (:meth:`ScoringMode.build_runner`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import UserError
from ..quality.calibration import NORMS_KEY
from ..storage.schema import PSEUDO_LABEL_COLUMNS, annotation_schema, with_score_kind

if TYPE_CHECKING:
    from ..config import AnnotateJob, CalibrateJob
    from ..models import LoadedModel
    from .stages import ScoringStage, ScoringStageConfig

log = logging.getLogger(__name__)

PERCENTILE_COLUMN = "quality_percentile"

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]
"""uint8 crops (N, H, W, 3) -> dict of float32 result columns, (N,) or (N, D)."""


class UnknownScoringModeError(UserError, ValueError):
    """A scoring mode name that is not one of :data:`MODES`; the message lists the allowed names.

    Raised by :func:`scoring_mode`; a :class:`~froq_ray.errors.UserError` (the CLI prints it on one line)
    and a ``ValueError``."""


@dataclass(frozen=True)
class ScoringMode:
    """What one scoring mode computes and writes.

    ``name``: the registry key (``scoring.mode``; ``calibrate`` is the calibrate job's).
    ``score_kind``: what the ``quality`` column holds (one of ``storage.schema.SCORE_KINDS``), written into the
    Parquet metadata as ``froq_ray.score_kind``.
    ``needs_calibration``: the run reads a calibration artifact (``calibration.artifact``) and writes its id.
    ``computes_embedding``: the mode's forward pass ends in the FR embedding (``quality_only`` stops before it).
    ``extra_float_columns``: float32 columns after the standard ones (``storage.schema.annotation_schema``).
    ``default_no_progress_timeout_s``: seconds a run of this mode may go without a finished batch before it
    is called stuck: 600 s where an image costs one forward pass (froq, student); 7200 s for the pseudo-label
    modes, which run 76 forward passes per 112 px image with the default perturbations (1 reference + 1 flip
    + 10 noise masks + 64 occlusion cells of 14 px), so one CPU batch can take tens of minutes.
    """

    name: str
    score_kind: str
    needs_calibration: bool = False
    computes_embedding: bool = False
    extra_float_columns: tuple[str, ...] = ()
    default_no_progress_timeout_s: float = 600.0

    def writes_embedding(self, cfg: ScoringStageConfig) -> bool:
        """Whether a run with stage config ``cfg`` writes the ``embedding`` column."""
        return self.computes_embedding and cfg.write_embedding and not cfg.quality_only

    def output_schema(
        self,
        model: LoadedModel,
        cfg: ScoringStageConfig,
        *,
        candidate_layers: Sequence[str] | None = None,
    ) -> pa.Schema:
        """The Arrow schema of every Parquet part a run of this mode writes, with ``froq_ray.score_kind`` in its
        metadata. ``model``: the loaded scoring model (``embedding_size`` sizes the embedding column);
        ``cfg``: the scoring stage config the actors get; ``candidate_layers`` (calibrate only; default
        ``cfg.candidate_layers``) sizes ``layer_norms``. Raises ``ValueError`` for a calibrate schema without
        candidate layers."""
        dim = model.embedding_size if self.writes_embedding(cfg) else None
        schema = annotation_schema(dim, self.extra_float_columns)
        for field in self._extra_fields(model, cfg, candidate_layers):
            schema = schema.append(field)
        return with_score_kind(schema, self.score_kind)

    def _extra_fields(
        self, _model: LoadedModel, _cfg: ScoringStageConfig, _candidate_layers: Sequence[str] | None
    ) -> list[pa.Field]:
        """The columns after the standard ones (:meth:`output_schema`'s arguments)."""
        return []  # the base mode adds no columns; the calibrate modes override this

    def candidate_layers(self, _model: LoadedModel) -> tuple[str, ...] | None:
        """The layers whose norms a run of ``model`` in this mode observes (a column each), or None when it observes
        none (every mode but calibrate, which overrides this)."""
        return None

    def constants(self, model: LoadedModel, calibration_id: str | None) -> dict[str, str | None]:
        """The columns that hold one value per run: ``model_id`` and ``calibration_id`` (None unless the mode
        needs a calibration). Raises ``ValueError`` when ``calibration_id`` is missing for a mode that needs
        one, or given to a mode that does not use one."""
        if self.needs_calibration and not calibration_id:
            raise ValueError(f"scoring mode {self.name!r} needs a calibration_id")
        if not self.needs_calibration and calibration_id is not None:
            raise ValueError(
                f"scoring mode {self.name!r} uses no calibration, got calibration_id {calibration_id!r}"
            )
        return {"model_id": model.model_id, "calibration_id": calibration_id}

    def load_model(self, cfg: ScoringStageConfig) -> LoadedModel:
        """The network this mode runs: the registry FR model of ``cfg`` (``ModelLoadError`` when it cannot
        be loaded)."""
        from ..models import load_model

        return load_model(cfg.model_name, cfg.model_weights, cfg.model_options)

    def build_runner(self, stage: ScoringStage) -> Runner:
        """The per-batch callable of a scoring actor ``stage`` (its ``cfg``, loaded ``model`` and ``device``):
        uint8 crops (N, H, W, 3) -> dict of float32 columns (``quality`` (N,) always)."""
        raise NotImplementedError


@dataclass(frozen=True)
class FroqMode(ScoringMode):
    """FROQ quality from the calibration's selected layers (+ the embedding, same forward pass).

    Its runner maps uint8 crops (N, H, W, 3) to ``quality`` float32 (N,) and, unless ``quality_only``,
    ``embedding`` float32 (N, D) (:class:`~froq_ray.quality.scorer.FroqScorer`). Needs the calibration
    artifact in ``cfg.artifact_json``: ``ValueError`` without one, the artifact's own errors for a bad one."""

    def build_runner(self, stage: ScoringStage) -> Runner:
        from ..quality.artifact import CalibrationArtifact
        from ..quality.scorer import FroqScorer

        cfg = stage.cfg
        if cfg.artifact_json is None:
            raise ValueError("the froq scoring stage needs the calibration artifact (cfg.artifact_json)")
        scorer = FroqScorer(
            stage.model,
            CalibrationArtifact.from_json(cfg.artifact_json, source="calibration artifact"),
            device=stage.device,
            precision=cfg.precision,
            quality_only=cfg.quality_only,
            model_batch_size=cfg.model_batch_size,
            memory_format=cfg.memory_format,
            compile=cfg.compile,
            graph=cfg.graph,
        )
        stage.graph = scorer.graph
        log.info(
            "scorer: %s, %s, %s, %s graph%s",
            stage.device,
            cfg.precision,
            scorer.memory_format,
            scorer.graph,
            ", compiled" if scorer.compiled else "",
        )
        embedding = self.writes_embedding(cfg)
        artifact = scorer.artifact
        if artifact.quality_quantiles is None:
            log.info(
                "calibration %s stores no quantiles: quality_percentile is null", artifact.calibration_id
            )

        def froq(pixels: np.ndarray) -> dict[str, np.ndarray]:
            result = scorer.score(pixels)
            percentile = (
                artifact.percentile(result.quality)
                if artifact.quality_quantiles is not None
                else np.full(len(result.quality), np.nan, dtype=np.float32)
            )
            cols = {"quality": result.quality, PERCENTILE_COLUMN: percentile}
            if embedding and result.embedding is not None:
                cols["embedding"] = result.embedding
            return cols

        return froq


@dataclass(frozen=True)
class PseudoLabelMode(ScoringMode):
    """The perturbation pseudo-label (FROQ's teacher score) and its components; ``quality`` = ``pseudo_label``.

    Its runner maps uint8 crops (N, H, W, 3) to float32 (N,) columns: ``quality`` and
    :data:`~froq_ray.storage.schema.PSEUDO_LABEL_COLUMNS` (the per-perturbation components and
    ``pseudo_label``); no embedding. No calibration is read; unknown ``perturbation`` settings, or an
    occlusion cell larger than the input, raise ``ValueError`` when the runner is built."""

    def build_runner(self, stage: ScoringStage) -> Runner:
        from ..imaging.prepare import network_input

        labeler = pseudo_labeler(stage)
        transform = stage.model.input_transform().to(stage.device)
        return lambda pixels: _with_quality(labeler(network_input(pixels, transform, labeler.device)))


def _observed_layers(cfg: ScoringStageConfig, candidate_layers: Sequence[str] | None) -> Sequence[str]:
    """The candidate layers a calibrate run observes: ``candidate_layers`` when given, else
    ``cfg.candidate_layers`` (empty when neither names any)."""
    return candidate_layers if candidate_layers is not None else (cfg.candidate_layers or ())


@dataclass(frozen=True)
class CalibrateMode(PseudoLabelMode):
    """The calibrate job's observation: the pseudo-label columns + every candidate layer's norm, one pass.

    Adds ``layer_norms``: float32 (N, L) with L = the number of candidate layers (a fixed-size list column
    in Parquet). :meth:`output_schema` raises ``ValueError`` without candidate layers."""

    def _extra_fields(
        self, _model: LoadedModel, cfg: ScoringStageConfig, candidate_layers: Sequence[str] | None
    ) -> list[pa.Field]:
        layers = _observed_layers(cfg, candidate_layers)
        if not layers:
            raise ValueError("the calibrate schema needs the candidate layers (calibration_layers(model))")
        return [pa.field(NORMS_KEY, pa.list_(pa.float32(), len(layers)))]

    def candidate_layers(self, model: LoadedModel) -> tuple[str, ...]:
        """Every module one forward pass of ``model`` calls, in network order
        (:func:`~froq_ray.quality.calibration.calibration_layers`; runs one probe forward pass)."""
        from ..quality.calibration import calibration_layers

        return tuple(calibration_layers(model)[0])

    def build_runner(self, stage: ScoringStage) -> Runner:
        from ..quality.calibration import observe_calibration_batch

        labeler = pseudo_labeler(stage)
        layers = list(stage.cfg.candidate_layers or ())
        return lambda pixels: _with_quality(
            observe_calibration_batch(stage.model, pixels, labeler, layers, device=stage.device)
        )


DEGRADED_NORMS = "degraded_layer_norms"
DEGRADED_EMBEDDING = "degraded_embedding"


@dataclass(frozen=True)
class LabelledCalibrateMode(CalibrateMode):
    """A labelled-target calibrate job's observation (``calibration.target: cr | genuine``): one forward pass per
    image gives every candidate layer's norm (``layer_norms``) and the embedding; no perturbation passes.
    ``quality`` = the embedding's L2 norm (score kind ``embedding_norm``). With ``degraded_copies`` = C > 0 the
    runner also makes C seeded degraded copies of each crop (:func:`~froq_ray.quality.calibration.
    degraded_copies`) and observes them: ``degraded_layer_norms`` (C * L, copy-major) and ``degraded_embedding``
    (C * D) on the image's row."""

    def _extra_fields(
        self, model: LoadedModel, cfg: ScoringStageConfig, candidate_layers: Sequence[str] | None
    ) -> list[pa.Field]:
        fields = super()._extra_fields(model, cfg, candidate_layers)
        copies = cfg.degraded_copies
        if copies:
            layers = len(_observed_layers(cfg, candidate_layers))
            fields.append(pa.field(DEGRADED_NORMS, pa.list_(pa.float32(), copies * layers)))
            fields.append(pa.field(DEGRADED_EMBEDDING, pa.list_(pa.float32(), copies * model.embedding_size)))
        return fields

    def build_runner(self, stage: ScoringStage) -> Runner:
        from ..quality.calibration import EMBEDDING_KEY, degraded_copies, observe_norms_and_embeddings

        cfg = stage.cfg
        layers = list(cfg.candidate_layers or ())
        copies = cfg.degraded_copies

        def observe(pixels: np.ndarray) -> dict[str, np.ndarray]:
            return observe_norms_and_embeddings(
                stage.model,
                pixels,
                layers,
                stage.device,
                precision=cfg.precision,
                max_forward_batch=cfg.model_batch_size,
            )

        def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
            seen = observe(pixels)
            embedding = seen[EMBEDDING_KEY]
            cols = {
                "quality": np.linalg.norm(embedding, axis=1).astype(np.float32),
                "embedding": embedding,
                NORMS_KEY: seen[NORMS_KEY],
            }
            if copies:
                n = len(pixels)
                copied = observe(degraded_copies(np.asarray(pixels), copies, cfg.degraded_seed)[0])
                cols[DEGRADED_NORMS] = copied[NORMS_KEY].reshape(n, -1)
                cols[DEGRADED_EMBEDDING] = copied[EMBEDDING_KEY].reshape(n, -1)
            return cols

        return run


@dataclass(frozen=True)
class StudentMode(ScoringMode):
    """A distilled student's predicted quality (teacher units); no FR model, no embedding, no calibration.

    Its model is the student artifact at ``cfg.student_artifact`` (``ValueError`` without one; the artifact
    loader's errors for a bad or mismatched one); its runner maps uint8 crops (N, H, W, 3) to ``quality``
    float32 (N,)."""

    def load_model(self, cfg: ScoringStageConfig) -> LoadedModel:
        """The student artifact ``cfg.student_artifact`` (read with ``cfg.storage_options``), fully checked."""
        from ..distill.serving import student_as_model

        if cfg.student_artifact is None:
            raise ValueError("the student scoring stage needs the student artifact (cfg.student_artifact)")
        return student_as_model(cfg.student_artifact, cfg.storage_options)

    def build_runner(self, stage: ScoringStage) -> Runner:
        from ..distill.serving import student_quality

        cfg = stage.cfg
        return student_quality(stage.model, stage.device, cfg.model_batch_size, cfg.memory_format)


MODES: dict[str, ScoringMode] = {
    m.name: m
    for m in (
        FroqMode(
            "froq",
            "froq_quality",
            needs_calibration=True,
            computes_embedding=True,
            extra_float_columns=(PERCENTILE_COLUMN,),
        ),
        PseudoLabelMode(
            "pseudo_label",
            "pseudo_label",
            extra_float_columns=PSEUDO_LABEL_COLUMNS,
            default_no_progress_timeout_s=7200.0,
        ),
        StudentMode("student", "student_prediction"),
        CalibrateMode(
            "calibrate",
            "calibration_pseudo_label",
            extra_float_columns=PSEUDO_LABEL_COLUMNS,
            default_no_progress_timeout_s=7200.0,
        ),
        LabelledCalibrateMode("calibrate_labelled", "embedding_norm", computes_embedding=True),
    )
}
"""Every scoring mode by name."""


def scoring_mode(name: str) -> ScoringMode:
    """The mode called ``name``; :class:`UnknownScoringModeError` naming the allowed names otherwise."""
    try:
        return MODES[name]
    except (KeyError, TypeError):
        raise UnknownScoringModeError(
            f"unknown scoring mode {name!r}: allowed are {', '.join(MODES)}"
        ) from None


def job_scoring_mode(cfg: AnnotateJob | CalibrateJob) -> ScoringMode:
    """The mode a job's run scores with: for the calibrate job ``calibrate`` (pseudo-label target) or
    ``calibrate_labelled`` (``calibration.target: cr | genuine``); ``scoring.mode`` for annotate."""
    if cfg.job == "calibrate":
        return MODES["calibrate" if cfg.calibration.target == "pseudo_label" else "calibrate_labelled"]
    return scoring_mode(cfg.scoring.mode)


def pseudo_labeler(stage: ScoringStage) -> Any:
    """A :class:`~froq_ray.quality.perturbations.PseudoLabeler` for the actor ``stage`` (its perturbation
    settings and precision) over :func:`perturbation_network`."""
    from ..models.inference import autocast_dtype
    from ..quality.perturbations import PerturbationSettings, PseudoLabeler

    cfg = stage.cfg
    return PseudoLabeler(
        perturbation_network(stage.model, stage.device, cfg),
        stage.model.contract,
        PerturbationSettings.from_dict(dict(cfg.perturbation)),
        stage.device,
        autocast_dtype(cfg.precision),
    )


def perturbation_network(model: LoadedModel, device: str, cfg: ScoringStageConfig) -> Any:
    """The network for the perturbed copies (no hooks needed): a frozen copy on the CPU, where it is 2-3x
    faster; elsewhere the original in the configured memory format, compiled when asked (each checked against
    the plain network on a batch, with a fallback)."""
    from ..quality.accelerate import (
        apply_memory_format,
        check_batch,
        compiled_or_eager,
        resolve_memory_format,
    )

    sample = check_batch(model.contract.size, device)
    if device == "cpu":
        from ..quality.accelerate import frozen_copy

        return frozen_copy(model.network, sample)

    network = model.network
    fmt = apply_memory_format(network, resolve_memory_format(cfg.memory_format), sample)
    log.info("perturbation network: %s, %s, %s", device, cfg.precision, fmt)
    return compiled_or_eager(network, sample, cfg.precision) if cfg.compile else network


def _with_quality(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Without a calibration the row's ``quality`` is the perturbation pseudo-label (FROQ's teacher score)."""
    columns["quality"] = columns["pseudo_label"]
    return columns
