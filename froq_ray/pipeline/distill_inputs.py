"""The distill job's driver-side data steps: read the annotation rows, check them against the teacher, split.

Inputs are annotate outputs (folders of ``part-*.parquet``, files, globs; local or ``s3://``) and filter
outputs (a folder holding ``keep_list.parquet``, or that file). Only the columns needed are read. A row is
used when its ``status`` is ok and its target is finite; every other row is counted by reason and logged.

The teacher (``model`` + ``calibration`` sections) matters when the target is one a teacher computes
(``quality``: FROQ with that calibration; ``pseudo_label`` and its components: the perturbation FIQA of that
model): the annotations must then carry the teacher's ``model_id`` (and for ``quality`` its
``calibration_id``), so the student card tells the truth and self-training labels match the originals.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import status as st
from ..config import DistillJob
from ..distill.split import check_no_leak, split_key_column, validation_mask
from ..errors import UserError
from ..models import LoadedModel, load_model
from ..quality.artifact import CalibrationArtifact
from ..storage.annotations import AnnotationFile, annotation_files, identities, read_table
from ..storage.schema import PSEUDO_LABEL_COLUMNS
from ..vocabulary import SplitKeySource
from .artifacts import read_artifact
from .inputs import concat_rows

log = logging.getLogger("froq_ray")

TARGET_MISSING = "target_not_finite"
ID_COLUMNS = ("model_id", "calibration_id")


class DistillInputError(UserError, ValueError):
    """The annotations cannot be used for distillation (missing column, wrong teacher...); names the input."""


@dataclass
class AnnotationRows:
    """The usable rows (``path``, ``identity``, ``target``, ``model_id``, ``calibration_id``, ``source_path``)
    and what was dropped."""

    table: pd.DataFrame
    files: list[str]
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)


def distill_files(uris: list[str], storage_options: dict[str, Any]) -> list[AnnotationFile]:
    """Annotation Parquet files of each URI; a folder with a filter keep-list (and no parts) gives that file
    (:func:`froq_ray.storage.annotations.annotation_files` with ``keep_lists``)."""
    return annotation_files(uris, storage_options, keep_lists=True, error=DistillInputError)


@dataclass(frozen=True)
class ColumnChoice:
    """Which columns hold the target and the identity (``identity_source``: column | folder | none)."""

    target: str
    identity_source: SplitKeySource = "column"
    identity_column: str = "identity"

    @classmethod
    def of(cls, cfg: DistillJob) -> ColumnChoice:
        d = cfg.distill
        return cls(d.target_column, d.identity_source, d.identity_column)


def _read_file(file: AnnotationFile, choice: ColumnChoice) -> pd.DataFrame:
    required = ["path", "status", choice.target]
    if choice.identity_source == "column":
        required.append(choice.identity_column)
    table = read_table(
        file,
        required,
        optional=(*ID_COLUMNS, "source_path"),
        hint="check distill.target_column and distill.identity_column / identity_source",
        error=DistillInputError,
    )
    target_type = table.schema.field(choice.target).type
    if not (pa.types.is_floating(target_type) or pa.types.is_integer(target_type)):
        raise DistillInputError(
            f"{file.uri}: distill.target_column {choice.target!r} is {target_type}, not numeric"
        )
    frame = table.to_pandas()
    out = pd.DataFrame({"path": frame["path"].astype(str), "status": frame["status"].astype(object)})
    values = frame[choice.identity_column].tolist() if choice.identity_source == "column" else None
    out["identity"] = identities(out["path"].tolist(), choice.identity_source, values)
    out["target"] = frame[choice.target].astype(np.float64)
    for name in (*ID_COLUMNS, "source_path"):
        out[name] = frame[name].astype(object).where(frame[name].notna(), None) if name in frame else None
    return out


def usable_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows with status ok and a finite target, and the count of every other row by reason."""
    status = frame["status"].to_numpy(dtype=object)
    finite = np.isfinite(frame["target"].to_numpy(dtype=np.float64))
    dropped = Counter(str(s) for s in status[status != st.OK])
    dropped[TARGET_MISSING] += int(((status == st.OK) & ~finite).sum())
    keep = (status == st.OK) & finite
    return frame[keep].reset_index(drop=True), {k: v for k, v in sorted(dropped.items()) if v}


def read_annotation_rows(
    uris: list[str], storage_options: dict[str, Any], choice: ColumnChoice
) -> AnnotationRows:
    """The usable rows of ``uris``, sorted by path; a path given twice is an error."""
    files = distill_files(uris, storage_options)
    frame = concat_rows([_read_file(f, choice) for f in files], DistillInputError)
    rows, dropped = usable_rows(frame)
    rows = rows.sort_values("path", kind="mergesort").reset_index(drop=True)
    return AnnotationRows(rows.drop(columns="status"), [f.uri for f in files], len(frame), dropped)


# ------------------------------------------------------------------------------------------------ teacher
@dataclass
class Teacher:
    """The configured teacher, loaded only when the target is one it computes (``mode`` is then the scoring
    mode that recomputes it: ``froq`` or ``pseudo_label``)."""

    model: LoadedModel | None = None
    artifact: CalibrationArtifact | None = None
    mode: str | None = None

    @property
    def calibration_id(self) -> str | None:
        return self.artifact.calibration_id if self.artifact else None

    def scoring(self) -> tuple[LoadedModel, str]:
        """``(model, scoring mode)`` of a teacher that computes the target; raises ``ValueError`` for one that
        does not (only such a teacher can label self-training copies)."""
        if self.model is None or self.mode is None:
            raise ValueError("this teacher does not compute the target (no model / scoring mode loaded)")
        return self.model, self.mode

    def card(self) -> dict[str, Any]:
        if self.model is None:
            return {"computes_target": False}
        return {
            "computes_target": True,
            "scoring_mode": self.mode,
            "model_id": self.model.model_id,
            "model_name": self.model.name,
            "weights_sha256": self.model.weights_sha256,
            "calibration_id": self.calibration_id,
        }


def load_teacher(cfg: DistillJob) -> Teacher:
    target = cfg.distill.target_column
    if target != "quality" and target not in PSEUDO_LABEL_COLUMNS:
        return Teacher()
    model = load_model(cfg.model.name, cfg.model.weights, cfg.model.options)
    log.info("teacher: %s (weights sha256 %s)", model.model_id, model.weights_sha256)
    if target != "quality":
        return Teacher(model, None, "pseudo_label")
    artifact = read_artifact(cfg.calibration.artifact, model, cfg.distill.storage_options)
    return Teacher(model, artifact, "froq")


def _distinct(values: pd.Series) -> list[str]:
    return sorted({str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))})


def check_teacher(rows: AnnotationRows, teacher: Teacher, self_training: bool) -> dict[str, Any]:
    """Refuse annotations made by another model or calibration than the teacher; returns what was found."""
    table = rows.table
    found = {name: _distinct(table[name]) for name in ID_COLUMNS}
    if teacher.model is None:
        return {"annotation_model_ids": found["model_id"], "verified": False}
    if not found["model_id"]:
        if self_training:
            raise DistillInputError(
                "the annotations have no model_id column, so their target cannot be checked against the teacher "
                "that labels the self-training copies: use annotate outputs (not a keep-list) as distill.annotations"
            )
        log.warning(
            "the annotations carry no model_id: the target is assumed to come from %s", teacher.model.model_id
        )
        return {"annotation_model_ids": [], "verified": False}
    if found["model_id"] != [teacher.model.model_id]:
        raise DistillInputError(
            f"the annotations were made by {', '.join(found['model_id'])} but the teacher (model section) is "
            f"{teacher.model.model_id}: set model.name / model.weights to the annotating model"
        )
    if teacher.mode == "froq":
        calibrations = found["calibration_id"]
        # pseudo_label-mode annotations carry a null id (an empty one before schema nulls were kept)
        if not calibrations or "" in calibrations or table["calibration_id"].isna().any():
            raise DistillInputError(
                "(some of) the annotations' quality has no calibration_id: annotated with scoring.mode=pseudo_label, "
                "their quality is the pseudo-label; set distill.target_column=pseudo_label"
            )
        if calibrations != [teacher.calibration_id]:
            raise DistillInputError(
                f"the annotations' quality comes from calibration {', '.join(calibrations)} but the teacher's "
                f"calibration (calibration.artifact) is {teacher.calibration_id}: set calibration.artifact to the "
                "artifact the annotations were made with"
            )
    return {"annotation_model_ids": found["model_id"], "verified": True}


# ------------------------------------------------------------------------------------------------ split, digest
def split_table(table: pd.DataFrame, cfg: DistillJob) -> pd.DataFrame:
    """``table`` plus ``split_key`` and ``side`` (train | validation); raises if a key lands on both sides."""
    d = cfg.distill
    identities = None if d.identity_source == "none" else table["identity"].tolist()
    keys = split_key_column(table["path"].tolist(), identities, table["source_path"].tolist())
    mask = validation_mask(keys, d.validation_fraction, d.split_seed)
    check_no_leak(keys, mask)
    out = table.copy()
    out["split_key"] = keys
    out["side"] = np.where(mask, "validation", "train")
    return out


def rows_digest(frame: pd.DataFrame, columns: list[str]) -> str:
    """sha256 (hex) of the given columns, row by row in order (floats by their exact repr)."""
    h = hashlib.sha256()
    for values in zip(*(frame[c].tolist() for c in columns), strict=True):
        h.update(
            (
                "\t".join("" if v is None else repr(v) if isinstance(v, float) else str(v) for v in values)
                + "\n"
            ).encode()
        )
    return h.hexdigest()
