"""Typed job configs: YAML + ``dotted.key=value`` overrides -> a validated, immutable-by-convention model.

Every section forbids unknown keys, so a typo fails before Ray starts; every validation problem is re-raised
as a :class:`ConfigError` whose message names the full dotted key, e.g.
``output.mod: unknown key (did you mean 'mode'?)`` or ``resources.actors: must be >= 1``.

One model per job (``calibrate``, ``annotate``, ``evaluate``, ``filter``, ``distill``) built from shared
sections; the top-level ``job`` key picks the class. Relative local paths (``input.uri``, ``model.weights``,
``calibration.artifact``, ``output.uri``, ``evaluate.*`` paths) are resolved against the current working
directory when the config is validated, which is what a user typing a command expects (``configs/annotate.yaml`` says
``../shared/data/...`` meaning "relative to where I run the command", the repository root).

:func:`config_digest` hashes only what changes the results (never resources, progress interval, output
location/mode or credentials), so a run can be resumed with more actors but not with other settings.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import UserError
from .imaging.degrade import ALL_KINDS, check_kinds
from .storage.fs import is_remote, redact
from .storage.schema import PSEUDO_LABEL_COLUMNS
from .vocabulary import Device, Graph, IdentitySource, MemoryFormat, Precision, SplitKeySource

JOBS = ("calibrate", "annotate", "evaluate", "filter", "distill", "export", "review")
BUILTIN = "builtin"
# Still-image raster formats a face crop can come in (camera/web/scan/codec outputs). Left out on purpose:
# documents, vector and container formats (.pdf, .eps, .ps, .wmf, .emf), video (.mpg, .fli), scientific
# data (.fits, .h5, .grib), icons/cursors/textures/brushes (.ico, .cur, .icns, .dds, .blp, .gbr, .ftc) and
# .psd (layered), which Pillow opens too but which are not face images. .heic/.heif need the pillow-heif
# plugin: kept only where Pillow registers them.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".apng",
    ".webp",
    ".bmp",
    ".dib",
    ".tif",
    ".tiff",
    ".gif",
    ".avif",
    ".avifs",
    ".heic",
    ".heif",
    ".jp2",
    ".j2k",
    ".j2c",
    ".jpc",
    ".jpf",
    ".jpx",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".tga",
    ".qoi",
    ".pcx",
    ".sgi",
    ".rgb",
    ".ras",
)


def _decodable_extensions() -> tuple[str, ...]:
    """IMAGE_EXTENSIONS that this environment's Pillow registers (so every listed file has a decoder)."""
    from PIL import Image

    registered = Image.registered_extensions()
    return tuple(e for e in IMAGE_EXTENSIONS if e in registered)


DEFAULT_EXTENSIONS = _decodable_extensions()
"""The default ``input.extensions``: :data:`IMAGE_EXTENSIONS` that Pillow decodes here."""


class ConfigError(UserError, ValueError):
    """A config that cannot be used; ``problems`` holds one ``dotted.key: message`` line per problem."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" ({source})" if source else ""
        if len(self.problems) == 1:  # the common case reads as one line
            super().__init__(f"{self.problems[0]}{where}")
        else:
            body = "\n".join(self.problems)
            super().__init__(f"invalid config{where}: {len(self.problems)} problems:\n{body}")


def resolve_local_path(value: str) -> str:
    """Make a local path absolute against the CWD (``~`` expanded); URIs with a scheme pass unchanged."""
    if is_remote(value) or value.startswith("file://"):
        return value
    return os.path.abspath(os.path.expanduser(value))


LocalOrUri = Annotated[str, Field(min_length=1), AfterValidator(resolve_local_path)]


def _one_or_many(value: Any) -> Any:
    """A lone text value as a list of that one value; anything else unchanged (validated as the list)."""
    return [value] if isinstance(value, str) else value


LocalOrUriList = Annotated[list[LocalOrUri], BeforeValidator(_one_or_many)]
"""Paths / URIs / globs (each a :data:`LocalOrUri`); a single one may be written without the list."""
StorageOptions = dict[str, Any]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class InputConfig(Section):
    """Where the images are: a local directory, an ``s3://`` prefix, a .parquet/.csv manifest, or a glob.
    An existing path is read as itself whatever characters it holds; a path that does not exist and holds
    ``*``, ``?`` or ``[`` is a glob (see :mod:`froq_ray.storage.listing`)."""

    uri: LocalOrUri
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    """Kept file name endings for directories and globs (case-insensitive); manifests are not filtered.
    Files left out are counted by extension in the run manifest (``input.skipped``)."""
    path_column: str = "path"
    """Manifest column holding image paths (relative ones resolve against the manifest's folder)."""
    identity_column: str | None = None
    """Manifest column holding identity labels."""
    identity_from_folder: bool = False
    """Identity = name of the image's parent folder."""
    storage_options: StorageOptions = Field(default_factory=dict)
    limit: int | None = Field(default=None, ge=1)
    """Keep only the first ``limit`` inputs in sorted path order."""

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one file extension")
        return sorted({e.lower() if e.startswith(".") else "." + e.lower() for e in value})

    @model_validator(mode="after")
    def _one_identity_source(self) -> InputConfig:
        if self.identity_column and self.identity_from_folder:
            raise ValueError("identity_column and identity_from_folder=true cannot both be set")
        return self

    @property
    def identity_source(self) -> IdentitySource | None:
        """The two identity keys in the one identity vocabulary (:data:`froq_ray.vocabulary.IdentitySource`, as
        ``evaluate`` / ``filter`` / ``review.identity_source``): ``folder`` with ``identity_from_folder``,
        ``column`` with an ``identity_column``, None without identities."""
        if self.identity_from_folder:
            return "folder"
        return "column" if self.identity_column else None


class ModelConfig(Section):
    """Which face-recognition model (registry name) and its weights; ``weights: null`` = built-in weights."""

    name: str = "dlib_resnet_v1"
    weights: LocalOrUri | None = None
    options: dict[str, Any] = Field(default_factory=dict)


def _resolve_artifact(value: str) -> str:
    return value if value == BUILTIN else resolve_local_path(value)


class CalibrationConfig(Section):
    """``artifact``: the calibration JSON that annotate applies (``builtin`` = the one shipped for the
    default model). ``top_n``: how many best layers the calibrate job's greedy selection considers."""

    artifact: Annotated[str, Field(min_length=1), AfterValidator(_resolve_artifact)] = BUILTIN
    top_n: int = Field(default=10, ge=1)


class CalibrateCalibrationConfig(CalibrationConfig):
    """The calibrate job's ``calibration`` section: what to calibrate against and how to combine the layers.

    ``target``: ``pseudo_label`` (the FROQ reference: 76 perturbation passes per 112 px image), ``cr`` (certainty
    ratio) or ``genuine`` (mean cosine to the other images of the identity) -- the labelled targets need
    identities (``input.identity_column`` or ``input.identity_from_folder``) and take one forward pass per image.
    ``method``: ``greedy`` (the reference: mean of the greedily selected layers' norms) or ``linear`` (ridge
    regression over the standardised log norms; needs identities for its grouped cross-validation).
    ``linear_top_n``: ``null`` = every candidate layer enters the linear fit, else the best ``linear_top_n`` by
    utility. ``cv_folds``: folds of the identity-grouped cross-validation. ``degraded_copies``: seeded degraded
    copies of each calibration image (the ``froq distill`` self-training degradation), observed and labelled
    with the image's identity (labelled targets only); ``degraded_seed`` seeds them."""

    target: Literal["pseudo_label", "cr", "genuine"] = "pseudo_label"
    method: Literal["greedy", "linear"] = "greedy"
    linear_top_n: int | None = Field(default=None, ge=1)
    cv_folds: int = Field(default=5, ge=2)
    degraded_copies: int = Field(default=0, ge=0)
    degraded_seed: int = 0


class PerturbationConfig(Section):
    """Pseudo-label (auxiliary FIQA) settings; defaults are the FROQ reference's. The allowed values are the
    core's (:func:`froq_ray.quality.perturbations.setting_problem`): ``noise_masks: 0`` or ``noise_alphas: []``
    turns noise off, ``occlusion_cell: 0`` occlusion, and at least one component must stay on. Build the core
    object with :meth:`froq_ray.quality.perturbations.PerturbationSettings.from_config`."""

    flip: bool = True
    noise_masks: int = 10
    noise_alphas: list[float] = Field(default_factory=lambda: [0.001])
    noise_seed: int = 0
    occlusion_cell: int = 14

    @field_validator("noise_masks", "noise_alphas", "occlusion_cell")
    @classmethod
    def _core_rule(cls, value: Any, info: ValidationInfo) -> Any:
        from .quality.perturbations import setting_problem  # torch: only when a value is given

        problem = setting_problem(str(info.field_name), value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _core_accepts(self) -> PerturbationConfig:
        if self.model_fields_set:  # the defaults are the reference's (no torch import for them)
            from .quality.perturbations import PerturbationSettings

            PerturbationSettings.from_config(self)
        return self


class ScoringConfig(Section):
    """What the scoring actors compute: FROQ quality (``froq``), the perturbation pseudo-label itself
    (``pseudo_label``), or the quality predicted by a distilled student (``student``: no FR model, no
    embedding; the ``model`` and ``calibration`` sections are not used)."""

    mode: Literal["froq", "pseudo_label", "student"] = "froq"
    student_artifact: LocalOrUri | None = None
    """The student artifact directory written by ``froq distill`` (``mode: student`` only)."""
    precision: Precision = "fp32"
    quality_only: bool = False
    """Stop the forward pass after the deepest selected layer (no embedding)."""
    write_embedding: bool = True
    graph: Graph = "auto"
    """How ``mode: froq`` runs its observed forward pass: ``frozen`` (one TorchScript graph, batch-norm folded,
    checked against ``eager`` on a batch at start-up and falling back to it), ``eager`` (the network with
    observer hooks), ``auto`` = frozen on a CPU actor in fp32, eager otherwise. A speed option (results agree
    within 1e-3 relative, measured 3e-6): not part of the config digest. The graph each actor really ran is in
    the run manifest (``scoring.graph_used``)."""
    memory_format: MemoryFormat = "auto"
    """The scoring network's memory format: ``auto`` = ``channels_last`` where a check batch at start-up agrees with
    NCHW (``contiguous`` otherwise), ``channels_last``, ``contiguous`` (NCHW). A speed option (not in the config
    digest); the format used is in the run manifest (``scoring.memory_format``)."""
    compile: bool = False
    """``torch.compile`` the scoring network (mode ``froq``, ``pseudo_label``; checked against the eager pass on a
    batch at start-up, falling back to it). A speed option (not in the config digest)."""
    perturbation: PerturbationConfig = Field(default_factory=PerturbationConfig)

    @model_validator(mode="after")
    def _embedding_needs_full_pass(self) -> ScoringConfig:
        if "graph" in self.model_fields_set and self.mode != "froq":
            raise ValueError(f"graph is the FROQ scorer's setting (mode=froq); mode is {self.mode!r}")
        if self.graph == "frozen" and self.precision != "fp32":
            raise ValueError(
                f"graph=frozen runs fp32 only (precision is {self.precision!r}): use graph=auto or eager"
            )
        if self.compile and self.graph == "frozen":
            raise ValueError("compile=true runs the eager graph under torch.compile: use graph=auto or eager")
        if self.compile and self.mode == "student":
            raise ValueError("compile is not used with mode=student (a student runs eagerly): leave it unset")
        if self.mode == "student":
            if self.student_artifact is None:
                raise ValueError("mode=student needs student_artifact (a `froq distill` output folder)")
            if self.write_embedding and "write_embedding" in self.model_fields_set:
                raise ValueError("a student writes no embedding: leave write_embedding unset or false")
            self.write_embedding = False
        elif self.student_artifact is not None:
            raise ValueError(f"student_artifact is only used with mode=student (mode is {self.mode!r})")
        if self.quality_only and self.write_embedding:
            raise ValueError("quality_only=true stops before the embedding: set write_embedding=false")
        return self


class ResourcesConfig(Section):
    """Cluster and actor resources; none of these change results (excluded from the config digest).

    Every number must be finite: ``inf`` or ``nan`` is an error naming the key (a run manifest holds no
    ``Infinity``; an unlimited no-progress timeout would hang a run that cannot progress)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    ray_address: str | None = None
    """``null``: the job starts a local Ray; ``auto`` or ``ray://host:port``: join that cluster."""
    num_cpus: int | None = Field(default=None, ge=1)
    """CPUs of the local Ray the job starts (ignored when joining a cluster)."""
    actors: int | tuple[int, int] = 1
    """Scoring actors: a fixed count (``4``) or an autoscaling range ``[min, max]`` (``[1, 8]``): Ray Data
    adds actors up to ``max`` while work is queued, so GPU nodes that the cluster autoscaler adds are used."""
    max_tasks_in_flight_per_actor: int | None = Field(default=None, ge=1)
    """Blocks queued per scoring actor (Ray Data's default when null); more hides decode/transfer latency."""
    no_progress_timeout_s: float | None = Field(default=None, gt=0)
    """Fail (instead of hanging) when no block finishes for this long, e.g. after a node is lost with no
    replacement; null = the scoring mode's default (600 s for froq/student, 7,200 s for the 76-pass
    pseudo_label/calibrate modes on a CPU). A re-run resumes from the completed shards."""
    headroom_cpus: float = Field(default=0, ge=0)
    """CPUs Ray Data leaves unused (``exclude_resources``) so that Ray can rebuild blocks lost with a node."""
    num_gpus_per_actor: float = Field(default=0, ge=0)
    num_cpus_per_actor: float = Field(default=1, gt=0)
    decode_num_cpus: float = Field(default=1, gt=0)
    export_num_cpus: float = Field(default=1, gt=0, strict=True, allow_inf_nan=False)
    """CPUs per export task (one task per ``export.shard_size`` shard: reads its source images, writes its
    files and marker); the export runs as many at once as the cluster has CPUs for. A finite number > 0 as
    typed (a boolean, a text, ``inf`` or ``nan`` is refused)."""
    ray_batch_size: int = Field(default=256, ge=1)
    """Rows per Ray block of the distill job's training data. (annotate and calibrate move one output shard,
    ``output.shard_size`` rows, per block from the read task to the write task.)"""
    model_batch_size: int = Field(default=128, ge=1)
    device: Device = "auto"

    @field_validator("actors", mode="before")
    @classmethod
    def _actor_range(cls, value: Any) -> int | tuple[int, int]:
        """A count, or ``[min, max]``: anything else is one clear error (not pydantic's per-union-member lines)."""
        pair = isinstance(value, (list, tuple)) and len(value) == 2
        items = list(value) if pair else [value]
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) for v in items)
            or min(items) < 1
            or (pair and items[1] < items[0])
        ):
            raise ValueError(
                f"must be a count >= 1 or a range [min, max] with 1 <= min <= max (got {value!r})"
            )
        return tuple(items) if pair else value

    @property
    def actor_range(self) -> tuple[int, int]:
        """``(min, max)`` scoring actors."""
        if isinstance(self.actors, int):
            return (self.actors, self.actors)
        low, high = self.actors
        return (low, high)

    @model_validator(mode="after")
    def _cuda_needs_a_gpu(self) -> ResourcesConfig:
        if self.device == "cuda" and self.num_gpus_per_actor == 0:
            raise ValueError(
                "device=cuda needs num_gpus_per_actor > 0 (Ray hides GPUs from actors without one)"
            )
        return self


class OutputConfig(Section):
    """Where results go (a local folder or an ``s3://`` prefix) and what to do with an existing run there."""

    uri: LocalOrUri
    mode: Literal["resume", "overwrite", "error_if_exists"] = "resume"
    shard_size: int = Field(default=2_048, ge=1)
    """Input rows per output Parquet shard, and per Ray block from the read task to the write task (a shard
    of 112 px crops is ``shard_size`` x 37.6 KB decoded); the unit of resume (part of the digest)."""
    storage_options: StorageOptions = Field(default_factory=dict)
    progress_interval_s: float = Field(default=30.0, gt=0)


class EvaluateConfig(Section):
    """EDC / pAUC evaluation of quality columns of an annotations output (see evaluation-protocol.md)."""

    annotations: LocalOrUri
    """Output folder (or Parquet file/glob) of an annotate run; it must hold embeddings."""
    identity_source: IdentitySource = "column"
    """``column``: the annotations' ``identity_column``; ``folder``: the parent folder of ``path``."""
    identity_column: str = "identity"
    quality_columns: list[str] = Field(default_factory=lambda: ["quality"], min_length=1)
    """One EDC curve per column (e.g. quality, pseudo_label, pl_flip)."""
    fmr: float = Field(default=1e-3, gt=0, lt=1)
    threshold_mode: Literal["fixed", "recomputed"] = "fixed"
    discard_limits: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.2, 0.3])
    plot: LocalOrUri | None = None
    """EDC PNG path; ``null`` = ``edc.png`` in ``output.uri``."""
    scores: LocalOrUriList = Field(default_factory=list)
    """CSV or Parquet files of another tool's scores (one file may be written without the list): a ``path``
    column (matched to the annotations' ``path`` exactly as written) and one or more numeric score columns,
    each evaluated beside the quality columns."""
    lower_is_better: list[str] = Field(default_factory=list)
    """Score (or quality) columns where a lower value means a better image (default: higher is better)."""
    bootstrap: int = Field(default=200, ge=0)
    """Bootstrap replicates (identities resampled with replacement, seed 0) for the 95 % bands; 0 = off."""
    storage_options: StorageOptions = Field(default_factory=dict)


class ClassifiabilityConfig(Section):
    """How the filter job computes CCS / NNCCS / CR (see ``froq_ray.curation.classifiability``)."""

    device: Device = "auto"
    """Where the nearest-centre search runs (``auto``: cuda when available)."""
    precision: Precision = "fp32"
    """Dtype of the centre matrix and similarity tiles on cuda; the search always runs in fp32 on cpu."""
    block_rows: int = Field(default=4096, ge=1)
    """Images per similarity tile."""
    block_centres: int = Field(default=65_536, ge=1)
    """Centres per similarity tile (tile memory = block_rows x block_centres x dtype size)."""
    chunk_rows: int = Field(default=65_536, ge=1)
    """Rows read from the annotation Parquet at a time (the job never holds all embeddings)."""
    eps: float = Field(default=1e-9, gt=0)
    """CR = CCS / (NNCCS + 1 + eps)."""


class PerIdentityPolicy(Section):
    """Keep each identity's best images: ``top_k`` or ``top_fraction`` (not both), at least ``min_count``."""

    top_k: int | None = Field(default=None, ge=1)
    top_fraction: float | None = Field(default=None, gt=0, le=1)
    min_count: int = Field(default=0, ge=0)
    """Never cap an identity below this many images (when it has them)."""

    @model_validator(mode="after")
    def _one_cap(self) -> PerIdentityPolicy:
        if self.top_k is not None and self.top_fraction is not None:
            raise ValueError("set top_k or top_fraction, not both")
        return self


Preset = Literal["preset"]
"""A threshold given as ``preset``: the value for the annotations' model (``froq_ray.curation.presets``)."""


def _cosine_or_preset(value: Any, low: float, high: float) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool) and not low <= value <= high:
        raise ValueError(f"must be between {low:g} and {high:g} (or preset), got {value}")
    return value


class LabelNoisePolicy(Section):
    """Suspected label noise: CCS below ``ccs_floor`` or NNCCS - CCS above ``margin`` (null: off; ``preset``:
    the value measured on LFW-dev for the annotations' model)."""

    ccs_floor: float | Preset | None = "preset"
    margin: float | Preset | None = "preset"
    drop: bool = False
    """Drop flagged images (false, the default: only flag them in the keep-list)."""

    @field_validator("ccs_floor")
    @classmethod
    def _ccs_range(cls, value: Any) -> Any:
        return _cosine_or_preset(value, -1, 1)

    @field_validator("margin")
    @classmethod
    def _margin_range(cls, value: Any) -> Any:
        return _cosine_or_preset(value, -2, 2)


class PoliciesConfig(Section):
    """Filter policies, applied in this order to the rows still kept (see docs/curation.md)."""

    quality_floor: float | None = None
    """Drop images whose quality is below this value."""
    label_noise: LabelNoisePolicy = Field(default_factory=LabelNoisePolicy)
    drop_lowest_fraction: float = Field(default=0.0, ge=0, lt=1)
    """Drop the lowest fraction of all ok images by quality."""
    per_identity: PerIdentityPolicy = Field(default_factory=PerIdentityPolicy)
    min_identity_images: int = Field(default=1, ge=1)
    """Drop identities left with fewer images than this (1 = off)."""


class DuplicatesConfig(Section):
    """Near-duplicate image pairs (cosine >= ``threshold``, within and across identities): reported in
    ``duplicates.parquet``, never dropped."""

    enabled: bool = True
    threshold: float | Preset = "preset"
    max_pairs: int = Field(default=1_000_000, ge=1)
    """Refuse (an error naming this key) when more pairs than this are found: a threshold too low."""

    @field_validator("threshold")
    @classmethod
    def _range(cls, value: Any) -> Any:
        return _cosine_or_preset(value, -1, 1)


class IdentityMergesConfig(Section):
    """Identity pairs whose class centres have cosine >= ``threshold``: suggested merges in
    ``identity_merges.parquet``, never applied."""

    enabled: bool = True
    threshold: float | Preset = "preset"

    @field_validator("threshold")
    @classmethod
    def _range(cls, value: Any) -> Any:
        return _cosine_or_preset(value, -1, 1)


class EvalOverlapConfig(Section):
    """Identities of the training set that overlap an evaluation set: the centre or any image has cosine >=
    ``threshold`` to any evaluation embedding. Off while ``embeddings`` is empty."""

    embeddings: LocalOrUriList = Field(default_factory=list)
    """Annotate output(s) of the evaluation images, made with the same model (``embedding`` column)."""
    threshold: float | Preset = "preset"
    drop: bool = True
    """Drop every image of an overlapping identity (reason ``eval_overlap``); false: report only."""
    storage_options: StorageOptions = Field(default_factory=dict)

    @field_validator("threshold")
    @classmethod
    def _range(cls, value: Any) -> Any:
        return _cosine_or_preset(value, -1, 1)


class FilterConfig(Section):
    """Training-set curation of annotation output(s): classifiability + policies -> a keep-list."""

    annotations: LocalOrUriList = Field(min_length=1)
    """Annotate output folder(s), Parquet file(s) or globs; they must hold embeddings and identities."""
    identity_source: IdentitySource = "column"
    identity_column: str = "identity"
    quality_column: str = "quality"
    """The column the quality policies rank by; ``cr`` ranks by the computed certainty ratio."""
    histogram_bins: int = Field(default=50, ge=2)
    storage_options: StorageOptions = Field(default_factory=dict)
    classifiability: ClassifiabilityConfig = Field(default_factory=ClassifiabilityConfig)
    policies: PoliciesConfig = Field(default_factory=PoliciesConfig)
    model_preset: str = "auto"
    """Whose thresholds ``preset`` means: ``auto`` (the annotations' ``model_id``) or a model name."""
    duplicates: DuplicatesConfig = Field(default_factory=DuplicatesConfig)
    identity_merges: IdentityMergesConfig = Field(default_factory=IdentityMergesConfig)
    eval_overlap: EvalOverlapConfig = Field(default_factory=EvalOverlapConfig)


class ExportConfig(Section):
    """``froq export``: the images a keep-list keeps -> identity folders, Parquet shards or WebDataset tar shards
    (see :mod:`froq_ray.pipeline.export`). The source images are only read."""

    keep_list: LocalOrUri
    """A ``froq filter`` output folder (its ``keep_list.parquet``) or a keep-list Parquet file (``path``,
    ``keep``, optional ``identity`` and ``quality`` columns)."""
    format: Literal["folder", "parquet", "webdataset"] = "folder"
    """``folder``: ``<output>/<identity>/<file name>`` copies; ``parquet``: ``part-NNNNN.parquet`` shards with the
    image bytes, ``path``, ``identity``, ``label``, ``quality``; ``webdataset``: ``shard-NNNNN.tar`` with
    ``<key>.<ext>`` (the image as stored), ``<key>.cls`` and ``<key>.json`` per image."""
    link: bool = False
    """``folder`` only, local sources and output: symbolic links to the sources instead of copies."""
    shard_size: int = Field(default=1_000, ge=1)
    """Kept images per shard: per Parquet / tar file, and the unit of resume for every format."""
    storage_options: StorageOptions = Field(default_factory=dict)
    """fsspec options for reading the keep-list and the source images (``output.storage_options`` write)."""

    @model_validator(mode="after")
    def _link_is_for_folders(self) -> ExportConfig:
        if self.link and self.format != "folder":
            raise ValueError(f"link=true is only for format=folder (format is {self.format!r})")
        return self


class ReviewConfig(Section):
    """``froq review``: annotations (+ a filter output) -> contact sheets and one static HTML page (see
    :mod:`froq_ray.pipeline.review`). The images are only read."""

    annotations: LocalOrUriList = Field(min_length=1)
    """Annotate output folder(s), Parquet file(s) or globs (``path``, ``status`` and the quality column)."""
    filter: LocalOrUri | None = None
    """A ``froq filter`` output folder of these annotations: label-noise flags, decisions, merges, duplicates."""
    identity_source: IdentitySource = "column"
    """Identities without a filter output (with one, the keep-list's identities are shown)."""
    identity_column: str = "identity"
    quality_column: str = "quality"
    extremes: int = Field(default=48, ge=0)
    """Images in each of the lowest- and highest-quality sections (0: no such sections)."""
    bands: int = Field(default=10, ge=0, le=100)
    """Percentile bands (of ``quality_percentile`` when annotated, else of this set's qualities); 0: none."""
    per_band: int = Field(default=12, ge=1)
    """Images shown per band, evenly spaced through the band."""
    identity_samples: int = Field(default=4, ge=0)
    """Images of the own / nearest identity beside a flagged image, and of each identity of a merge pair."""
    max_label_noise: int | None = Field(default=None, ge=1)
    """At most this many flagged images (lowest CCS first); null: all of them."""
    max_pairs: int | None = Field(default=200, ge=1)
    """At most this many duplicate pairs and merge suggestions each (highest cosine first); null: all."""
    thumbnail_size: int = Field(default=112, ge=16, le=512)
    """Thumbnail side in px (images are decoded as the annotate job decodes them, resized to a square)."""
    sheet_columns: int = Field(default=12, ge=2)
    sheet_rows: int = Field(default=20, ge=1)
    """Tile rows per contact sheet PNG (a section with more rows gets several sheets)."""
    storage_options: StorageOptions = Field(default_factory=dict)
    """fsspec options for the annotations, the filter output and the images (``output.storage_options``
    write)."""


STUDENT_ARCHS = ("tiny_cnn", "mobilefacenet_student")
"""The student architectures of :mod:`froq_ray.distill.students` (kept equal to its ``STUDENT_ARCHS``)."""
TEACHER_TARGETS = ("quality", *PSEUDO_LABEL_COLUMNS)
"""Target columns a teacher recomputes on new images: FROQ ``quality`` (with the calibration) and the
perturbation pseudo-label or one of its components. Others (``cr``, ``ccs``...) come from a whole dataset."""


class DistillDataConfig(Section):
    """What the student learns from: ok rows of annotation outputs and one numeric target column."""

    annotations: LocalOrUriList = Field(min_length=1)
    """Annotate output folder(s), Parquet file(s) or globs, or a filter output (its ``keep_list.parquet``)."""
    target_column: str = Field(default="quality", min_length=1)
    """Any numeric column: ``quality`` (FROQ), ``pseudo_label`` or a component, or ``cr`` from a keep-list."""
    identity_source: SplitKeySource = "column"
    """Split key: the identity (``column`` or parent ``folder``), or ``none``: the (source) image path."""
    identity_column: str = "identity"
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    split_seed: int = 0
    storage_options: StorageOptions = Field(default_factory=dict)
    """s3fs options for the annotations and the images they name."""


class StudentConfig(Section):
    """The student network (see ``froq_ray.distill.students``)."""

    arch: Literal["tiny_cnn", "mobilefacenet_student"] = "tiny_cnn"
    input_size: int = Field(default=64, ge=32, le=512)
    """Square input side; the 112 crops are resized to it in the training workers."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Architecture options, e.g. ``width`` (tiny_cnn), ``head_hidden`` / ``init_weights`` (mobilefacenet_student).
    A relative ``init_weights`` path resolves against the current directory, like every other local path (the
    training workers run elsewhere)."""

    @field_validator("options")
    @classmethod
    def _absolute_init_weights(cls, value: dict[str, Any]) -> dict[str, Any]:
        path = value.get("init_weights")
        if isinstance(path, str) and path:
            return {**value, "init_weights": resolve_local_path(path)}
        return value


class SelfTrainingConfig(Section):
    """Degraded copies of the images, labelled by the teacher in the same run, added to the training data."""

    enabled: bool = False
    copies: int = Field(default=1, ge=1)
    """Degraded copies per chosen image."""
    fraction: float = Field(default=1.0, gt=0, le=1)
    """Fraction of the ok images (seeded choice) that get copies."""
    seed: int = 0
    kinds: list[str] = Field(default_factory=lambda: list(ALL_KINDS))
    """Degradation kinds of ``froq_ray.imaging.degrade`` to draw from (default: all, occlusion included)."""
    kinds_per_copy: int = Field(default=1, ge=1)
    """How many distinct kinds are applied to one copy."""
    precision: Precision = "fp32"
    perturbation: PerturbationConfig = Field(default_factory=PerturbationConfig)
    """Pseudo-label settings of the teacher (used when the target is a pseudo-label column)."""

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        return list(check_kinds(value))

    @model_validator(mode="after")
    def _enough_kinds(self) -> SelfTrainingConfig:
        if self.kinds_per_copy > len(self.kinds):
            raise ValueError(
                f"kinds_per_copy={self.kinds_per_copy} exceeds the {len(self.kinds)} kind(s) listed"
            )
        return self


class LossSection(Section):
    """The distillation loss (``froq_ray.distill.losses``)."""

    regression: Literal["mse", "smooth_l1"] = "mse"
    rank: Literal["pairwise", "correlation", "none"] = "pairwise"
    rank_weight: float = Field(default=1.0, ge=0)


class TrainingConfig(Section):
    """The Ray Train loop: AdamW + per-step cosine schedule, a checkpoint every epoch."""

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=2)
    """Global batch: each of the ``num_workers`` workers takes ``ceil(batch_size / num_workers)`` rows."""
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    loss: LossSection = Field(default_factory=LossSection)
    seed: int = 0
    num_workers: int = Field(default=1, ge=1)
    """Ray Train workers (data-parallel)."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: float = Field(default=1, gt=0)
    """CPUs reserved per worker (its torch threads); decoding runs in separate Ray Data tasks."""
    shuffle_buffer_rows: int = Field(default=2048, ge=1)
    """Rows each worker shuffles among (seeded per epoch) on top of a seeded global order."""
    keep_checkpoints: int | None = Field(default=2, ge=1)
    """Epoch checkpoints kept in ``<output>/_train`` (``null``: all)."""
    cache_decoded: bool | Literal["auto"] = "auto"
    """Decode the crops once into Ray's object store instead of every epoch: ``true``, ``false`` or ``auto``
    (cache when the decoded crops take at most a quarter of the cluster's object store). Same rows, same order,
    same result; cached epochs leave the CPUs to the training workers."""


class JobBase(Section):
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    output: OutputConfig


class ModelJobBase(JobBase):
    """Sections shared by the jobs that run a model over images."""

    input: InputConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)


class CalibrateJob(ModelJobBase):
    """Pseudo-labels (or labelled targets) + all candidate layers' norms -> observer fit -> calibration artifact."""

    job: Literal["calibrate"]
    calibration: CalibrateCalibrationConfig = Field(default_factory=CalibrateCalibrationConfig)

    @model_validator(mode="after")
    def _labels_are_given(self) -> CalibrateJob:
        has_labels = bool(self.input.identity_column) or self.input.identity_from_folder
        c = self.calibration
        if c.degraded_copies and c.target == "pseudo_label":
            raise ValueError(
                "calibration.degraded_copies: needs a labelled calibration.target (cr or genuine); the "
                "pseudo_label target would take its perturbation passes on every copy"
            )
        needs = "calibration.target" if c.target != "pseudo_label" else "calibration.method"
        if (c.target != "pseudo_label" or c.method == "linear") and not has_labels:
            value = c.target if needs == "calibration.target" else c.method
            raise ValueError(
                f"{needs}: {value} needs identity labels: set input.identity_column (a manifest column) or "
                "input.identity_from_folder=true"
            )
        return self

    @model_validator(mode="after")
    def _calibrates_an_fr_model(self) -> CalibrateJob:
        if self.scoring.mode == "student":
            raise ValueError(
                "scoring.mode=student: calibration observes a face-recognition model, not a student"
            )
        if "graph" in self.scoring.model_fields_set:
            raise ValueError("scoring.graph: the calibrate job runs no FROQ scorer (leave graph unset)")
        return self


class AnnotateJob(ModelJobBase):
    """Quality (and optionally embedding / pseudo-labels) for every input image -> Parquet shards."""

    job: Literal["annotate"]


class EvaluateJob(JobBase):
    """Annotations + identities -> EDC/pAUC table + plot."""

    job: Literal["evaluate"]
    evaluate: EvaluateConfig


class FilterJob(JobBase):
    """Annotations (embeddings + identities) -> CCS/NNCCS/CR -> policies -> keep-list, stats, summary, PNG."""

    job: Literal["filter"]
    filter: FilterConfig


class DistillJob(JobBase):
    """Annotations (+ teacher-labelled degraded copies) -> a small student regressor -> a student artifact."""

    job: Literal["distill"]
    distill: DistillDataConfig
    student: StudentConfig = Field(default_factory=StudentConfig)
    self_training: SelfTrainingConfig = Field(default_factory=SelfTrainingConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The teacher: labels the self-training copies, checked against the annotations, recorded in the card."""
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)

    @model_validator(mode="after")
    def _teacher_can_label_copies(self) -> DistillJob:
        target = self.distill.target_column
        if self.self_training.enabled and target not in TEACHER_TARGETS:
            raise ValueError(
                f"self_training.enabled: the teacher cannot label degraded copies with {target!r} "
                f"(distill.target_column); a teacher recomputes only {', '.join(TEACHER_TARGETS)}: "
                "set self_training.enabled=false or choose one of those targets"
            )
        return self


class ExportJob(JobBase):
    """A keep-list's images -> identity folders, Parquet or WebDataset shards; sources never touched."""

    job: Literal["export"]
    export: ExportConfig


class ReviewJob(JobBase):
    """Annotations (+ filter output) -> contact sheets + a static HTML review page; images never touched."""

    job: Literal["review"]
    review: ReviewConfig


JobConfig = CalibrateJob | AnnotateJob | EvaluateJob | FilterJob | DistillJob | ExportJob | ReviewJob
JOB_CLASSES: dict[str, type[JobBase]] = {
    "calibrate": CalibrateJob,
    "annotate": AnnotateJob,
    "evaluate": EvaluateJob,
    "filter": FilterJob,
    "distill": DistillJob,
    "export": ExportJob,
    "review": ReviewJob,
}


# --------------------------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1}; "
                    f"first on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_config(
    path: str | Path,
    overrides: Iterable[str] = (),
    expected_job: str | None = None,
    values: Mapping[str, Any] | None = None,
) -> JobConfig:
    """Read a YAML job config, apply ``values`` then the ``dotted.key=value`` overrides, validate.

    ``values`` maps dotted keys to values set exactly as given (the CLI's ``--input``/``--output``/``--mode``);
    ``overrides`` are ``--set`` texts, read as :func:`apply_overrides` describes. ``expected_job`` (the command
    the user ran) must match the config's ``job`` when given.
    Raises :class:`ConfigError` naming the file and every bad key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc}"], source=str(path)) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {' '.join(str(exc).split())}"], source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping of sections, got {type(data).__name__}"], str(path))
    return config_from_dict(data, overrides, expected_job=expected_job, source=str(path), values=values)


def config_from_dict(
    data: Mapping[str, Any],
    overrides: Iterable[str] = (),
    expected_job: str | None = None,
    source: str | None = None,
    *,
    values: Mapping[str, Any] | None = None,
) -> JobConfig:
    """Validate a config given as a mapping (what :func:`load_config` does after reading the YAML), after
    setting ``values`` (dotted key -> value, used as given) and then the ``overrides`` (see
    :func:`apply_overrides`). Raises :class:`ConfigError` naming every bad key."""
    overrides = list(overrides)
    job_class = JOB_CLASSES.get(_job_of(data, overrides, values, expected_job))
    data = apply_overrides(data, overrides, job_class=job_class, values=values)
    job = data.get("job", expected_job)
    if job is None:
        raise ConfigError([f"job: required key missing (one of {', '.join(JOBS)})"], source)
    if job not in JOB_CLASSES:
        raise ConfigError([f"job: must be one of {', '.join(JOBS)} (got {job!r})"], source)
    if expected_job is not None and job != expected_job:
        raise ConfigError(
            [f"job: this config is for {job!r}, but the {expected_job!r} command was run"], source
        )
    cls = JOB_CLASSES[job]
    try:
        validated = cls.model_validate({**data, "job": job})
        assert isinstance(validated, JobConfig)  # every JOB_CLASSES value is a member of JobConfig
        return validated
    except ValidationError as exc:
        raise ConfigError([_describe(cls, err) for err in exc.errors()], source) from None


def validate_section(cls: type[BaseModel], data: Mapping[str, Any], source: str | None = None) -> Any:
    """``cls`` validated from ``data`` (a section, or any :class:`Section` subclass used outside a job config,
    e.g. the Python API's settings); raises :class:`ConfigError` naming every bad key, as :func:`config_from_dict`."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError([_describe(cls, err) for err in exc.errors()], source) from None


def _job_of(
    data: Mapping[str, Any], overrides: list[str], values: Mapping[str, Any] | None, expected_job: str | None
) -> Any:
    """The ``job`` the config will have once ``values`` and ``overrides`` are applied (the last setting wins)."""
    job = data.get("job", expected_job)
    if values and "job" in values:
        job = values["job"]
    for item in overrides:
        key, sep, raw = item.partition("=")
        if sep and key.strip() == "job":
            job = raw
    return job


def apply_overrides(
    data: Mapping[str, Any],
    overrides: Iterable[str],
    job_class: type[BaseModel] | None = None,
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``values`` item and then each ``a.b.c=value`` override set
    (intermediate mappings created as needed).

    ``values`` (dotted key -> value) are set exactly as given. An override's text after the first ``=`` is
    read by the type of the field it sets in ``job_class``: a string field (``str``, a literal of strings,
    a path or URI) takes the text literally, spaces, ``#``, ``[``, ``*``, ``2019``, ``yes`` and ``null``
    included; an optional string field takes an empty text as null; a list-of-strings field takes a text
    starting with ``[`` as a YAML list and any other text as one literal string. Every other field (numbers,
    booleans, lists, mappings, keys inside ``options`` / ``storage_options``, unknown keys, or any key when
    ``job_class`` is None) reads the text as YAML, an empty text as null.
    Raises :class:`ConfigError` for an item that is not ``dotted.key=value``, invalid YAML, or a key below
    a value that is not a section.
    """
    out = json.loads(json.dumps(data, default=str)) if data else {}
    for key, value in (values or {}).items():
        _set_dotted(out, key, value)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError([f"override {item!r}: expected dotted.key=value"])
        _set_dotted(out, key, _override_value(key, raw, job_class))
    return out


def _set_dotted(out: dict[str, Any], key: str, value: Any) -> None:
    node = out
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError([f"{key}: cannot set a key inside {where}, which is not a section"])
        node = child
    node[parts[-1]] = value


def _override_value(key: str, raw: str, job_class: type[BaseModel] | None) -> Any:
    """The value of the override ``key=raw``, read as the type of ``key``'s field needs (see apply_overrides)."""
    kind = _field_kind(job_class, key.split(".")) if job_class is not None else "yaml"
    if kind == "text":
        return raw
    if kind == "optional_text":
        return raw if raw else None
    if kind == "text_list" and not raw.lstrip().startswith("["):
        return [raw]  # one text as typed: a one-item list (whatever the field's own validators accept)
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            [f"{key}: override value {raw!r} is not valid YAML: {' '.join(str(exc).split())}"]
        ) from None


def _field_kind(cls: type[BaseModel], parts: list[str]) -> str:
    """How an override of the field at ``parts`` is read: ``text``, ``optional_text``, ``text_list`` or
    ``yaml`` (also for unknown keys and keys inside mapping-typed fields)."""
    model: type[BaseModel] = cls
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return "yaml"
        if depth == len(parts) - 1:
            return _annotation_kind(field.annotation)
        section = _section_type(field.annotation)
        if section is None:
            return "yaml"
        model = section
    return "yaml"


def _annotation_kind(annotation: Any) -> str:
    annotation = _strip_annotated(annotation)
    if _is_text(annotation):
        return "text"
    if get_origin(annotation) in (Union, UnionType):
        members = [_strip_annotated(a) for a in get_args(annotation)]
        rest = [a for a in members if a is not type(None)]
        if len(rest) < len(members) and rest and all(_is_text(a) for a in rest):
            return "optional_text"
        return "yaml"
    if get_origin(annotation) is list and all(_is_text(_strip_annotated(a)) for a in get_args(annotation)):
        return "text_list"
    return "yaml"


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    if get_origin(annotation) is Literal:
        return all(isinstance(a, str) for a in get_args(annotation))
    return False


# --------------------------------------------------------------------------------------------- error text


def _describe(cls: type[BaseModel], err: Mapping[str, Any]) -> str:
    """One ``dotted.key: message`` line for a pydantic error."""
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "<config>"
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind == "extra_forbidden":
        known = _known_keys(cls, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = (
            f" (did you mean {close[0]!r}?)"
            if close
            else f" (known keys: {', '.join(known)})"
            if known
            else ""
        )
        return f"{key}: unknown key{hint}"
    templates = {
        "missing": "required key missing",
        "greater_than_equal": "must be >= {ge}",
        "greater_than": "must be > {gt}",
        "less_than_equal": "must be <= {le}",
        "less_than": "must be < {lt}",
        "literal_error": "must be one of {expected}",
        "too_short": "must have at least {min_length} item(s)",
        "string_too_short": "must not be empty",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "finite_number": "must be a finite number, not inf or nan",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping of keys",
        "model_attributes_type": "must be a mapping of keys",
    }
    if kind in templates:
        message = templates[kind].format(**ctx)
        if kind != "missing":
            message += f" (got {given!r})"
    else:
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if not loc and _NAMES_ITS_KEY.match(message):  # a check across sections names its own key
            return message
    return f"{key}: {message}"


_NAMES_ITS_KEY = re.compile(r"^[a-z_]+(\.[a-z_]+)+: ")


def _known_keys(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (empty when ``loc`` does not lead to a section)."""
    model: Any = cls
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        model = _section_type(field.annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------------------------- digests


_NOT_IN_DIGEST: dict[str, Any] = {
    "resources": True,
    "input": {"storage_options"},
    "output": {"uri", "mode", "storage_options", "progress_interval_s"},
    # speed options, each checked against the plain eager pass (a resume may change them)
    "scoring": {"graph", "memory_format", "compile"},
    "evaluate": {"storage_options"},
    "filter": {"storage_options"},
    "distill": {"storage_options"},
    "export": {"storage_options"},
    "review": {"storage_options"},
    # how many CPUs a training worker reserves and how many checkpoints are kept do not change the student
    "training": {"cpus_per_worker", "keep_checkpoints", "cache_decoded"},
}


def config_digest(cfg: JobConfig, extra: Mapping[str, Any] | None = None) -> str:
    """sha256 (hex) of the canonical JSON of the settings that change results.

    Excluded: ``resources`` (actors, batch sizes, device, cluster), ``output.uri/mode/progress_interval_s``,
    ``scoring.graph`` / ``memory_format`` / ``compile`` (checked speed options) and every ``storage_options``
    (credentials, endpoints).
    Included: the job, input selection, model, calibration, scoring and ``output.shard_size`` (it fixes the
    shard layout). ``extra`` (JSON-able) folds in what the config only names, e.g.
    ``{"weights_sha256": ..., "calibration_id": ...}``, so that new weights or a new built-in artifact behind
    the same config also refuse a resume.
    """
    canonical = json.dumps(
        digest_payload(cfg, extra), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def digest_payload(cfg: JobConfig, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-able settings :func:`config_digest` hashes (``extra`` under ``_extra``); no storage options."""
    exclude = {k: v for k, v in _NOT_IN_DIGEST.items() if k in type(cfg).model_fields}
    payload = cfg.model_dump(mode="json", exclude=exclude)
    if extra:
        payload["_extra"] = dict(extra)
    return payload


def resolved_dict(cfg: JobConfig) -> dict[str, Any]:
    """The full resolved config as plain JSON-able data, with credentials in storage options redacted."""
    data = cfg.model_dump(mode="json")
    for section in data.values():
        if isinstance(section, dict) and isinstance(section.get("storage_options"), dict):
            section["storage_options"] = redact(section["storage_options"])
    return data
