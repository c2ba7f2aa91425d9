"""Composable filter policies: a row table -> ``keep`` and one ``reason`` per row.

Input columns: ``status``, ``identity``, ``quality`` (the column the policies rank by), ``ccs``, ``nnccs``;
optional ``has_embedding`` (bool, default all true). Every row gets exactly one reason: ``kept``, or the FIRST
of these that applies, in this order:

1. ``<status>`` -- the row's status when it is not ``ok`` (decode/read/model failures are never kept);
   ``identity_missing`` / ``embedding_missing`` -- an ok row without a label or an embedding;
   ``eval_overlap`` -- the row's identity overlaps the evaluation set (optional ``eval_overlap`` bool
   column, dropped when ``drop_eval_overlap``);
2. ``quality_missing`` -- quality is NaN, when any quality policy (3, 5, 6) is on;
3. ``quality_floor`` -- quality < ``quality_floor``;
4. ``label_noise`` -- flagged by :mod:`.label_noise` (when ``label_noise.drop``);
5. ``global_lowest`` -- among the floor(``drop_lowest_fraction`` x N) lowest-quality usable rows (N = rows
   that passed step 1; ties broken by row order); rows already dropped by 2-4 count towards that fraction;
6. ``identity_cap`` -- beyond the identity's best ``top_k`` (or ceil(``top_fraction`` x its kept rows)),
   never cutting below ``min_count``; ranked by quality, ties by row order, over rows still kept;
7. ``identity_too_small`` -- the identity has fewer than ``min_identity_images`` rows still kept.

``label_noise`` / ``label_noise_rule`` are added for every row whatever ``drop`` says, so a keep-list always
shows the flags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import status as st
from .label_noise import flag_label_noise

KEPT = "kept"
IDENTITY_MISSING = "identity_missing"
EMBEDDING_MISSING = "embedding_missing"
QUALITY_MISSING = "quality_missing"
QUALITY_FLOOR = "quality_floor"
LABEL_NOISE = "label_noise"
GLOBAL_LOWEST = "global_lowest"
EVAL_OVERLAP = "eval_overlap"
IDENTITY_CAP = "identity_cap"
IDENTITY_TOO_SMALL = "identity_too_small"
POLICY_REASONS = (
    EVAL_OVERLAP,
    QUALITY_MISSING,
    QUALITY_FLOOR,
    LABEL_NOISE,
    GLOBAL_LOWEST,
    IDENTITY_CAP,
    IDENTITY_TOO_SMALL,
)
"""Reasons a usable row can be dropped for, in the order the policies run."""


@dataclass(frozen=True)
class IdentityCap:
    top_k: int | None = None
    top_fraction: float | None = None
    min_count: int = 0

    @property
    def active(self) -> bool:
        return self.top_k is not None or self.top_fraction is not None

    def limits(self, sizes: np.ndarray) -> np.ndarray:
        """How many images each identity of ``sizes`` kept rows may keep."""
        if self.top_k is not None:
            limit = np.full(sizes.shape, self.top_k, dtype=np.int64)
        elif self.top_fraction is not None:
            limit = np.ceil(sizes * self.top_fraction - 1e-9).astype(np.int64)
        else:
            return sizes.astype(np.int64)
        return np.minimum(np.maximum(limit, self.min_count), sizes)


@dataclass(frozen=True)
class NoiseRule:
    """Label-noise thresholds as numbers (the filter resolves ``preset``) and whether flags drop rows
    (default: reported only)."""

    ccs_floor: float | None = 0.2
    margin: float | None = 0.0
    drop: bool = False


@dataclass(frozen=True)
class PolicySettings:
    quality_floor: float | None = None
    drop_lowest_fraction: float = 0.0
    per_identity: IdentityCap = field(default_factory=IdentityCap)
    min_identity_images: int = 1
    label_noise: NoiseRule = field(default_factory=NoiseRule)
    drop_eval_overlap: bool = True

    @property
    def uses_quality(self) -> bool:
        return self.quality_floor is not None or self.drop_lowest_fraction > 0 or self.per_identity.active

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PolicySettings:
        """From the ``filter.policies`` config section as a plain mapping (``model_dump()``)."""
        values = dict(data)
        values["per_identity"] = IdentityCap(**values.get("per_identity", {}))
        values["label_noise"] = NoiseRule(**values.get("label_noise", {}))
        return cls(**values)


def initial_reasons(table: pd.DataFrame) -> np.ndarray:
    """Step 1 of the module doc: the status for rows not ok, missing identity/embedding, else ``kept``."""
    status = table["status"].to_numpy(dtype=object)
    reason = np.where(status == st.OK, KEPT, status).astype(object)
    usable = reason == KEPT
    no_identity = table["identity"].isna().to_numpy()
    reason[usable & no_identity] = IDENTITY_MISSING
    if "has_embedding" in table:
        reason[(reason == KEPT) & ~table["has_embedding"].to_numpy(dtype=bool)] = EMBEDDING_MISSING
    return reason


def _drop(reason: np.ndarray, mask: np.ndarray, why: str) -> None:
    reason[mask & (reason == KEPT)] = why


def _global_lowest(reason: np.ndarray, usable: np.ndarray, quality: np.ndarray, fraction: float) -> None:
    rows = np.flatnonzero(usable)
    count = math.floor(fraction * rows.size + 1e-9)
    if count == 0:
        return
    q = np.where(np.isfinite(quality[rows]), quality[rows], -np.inf)  # missing quality ranks lowest
    lowest = rows[np.lexsort((rows, q))[:count]]
    mask = np.zeros(reason.size, dtype=bool)
    mask[lowest] = True
    _drop(reason, mask, GLOBAL_LOWEST)


def _identity_cap(reason: np.ndarray, identity: np.ndarray, quality: np.ndarray, cap: IdentityCap) -> None:
    rows = np.flatnonzero(reason == KEPT)
    if rows.size == 0:
        return
    groups = pd.DataFrame({"identity": identity[rows], "quality": quality[rows]})
    rank = groups.groupby("identity", sort=False)["quality"].rank(method="first", ascending=False).to_numpy()
    sizes = groups.groupby("identity", sort=False)["quality"].transform("size").to_numpy()
    beyond = rank > cap.limits(sizes)
    mask = np.zeros(reason.size, dtype=bool)
    mask[rows[beyond]] = True
    _drop(reason, mask, IDENTITY_CAP)


def _small_identities(reason: np.ndarray, identity: np.ndarray, minimum: int) -> None:
    rows = np.flatnonzero(reason == KEPT)
    if minimum <= 1 or rows.size == 0:
        return
    sizes = pd.Series(identity[rows]).map(pd.Series(identity[rows]).value_counts()).to_numpy()
    mask = np.zeros(reason.size, dtype=bool)
    mask[rows[sizes < minimum]] = True
    _drop(reason, mask, IDENTITY_TOO_SMALL)


def apply_policies(table: pd.DataFrame, settings: PolicySettings) -> pd.DataFrame:
    """A copy of ``table`` plus ``keep``, ``reason``, ``label_noise``, ``label_noise_rule`` (module doc)."""
    reason = initial_reasons(table)
    usable = reason == KEPT
    quality = table["quality"].to_numpy(dtype=np.float64)
    identity = table["identity"].to_numpy(dtype=object)
    noise = flag_label_noise(
        table["ccs"].to_numpy(np.float64),
        table["nnccs"].to_numpy(np.float64),
        settings.label_noise.ccs_floor,
        settings.label_noise.margin,
    )
    flagged = noise.flagged & usable
    if settings.drop_eval_overlap and "eval_overlap" in table:
        _drop(reason, table["eval_overlap"].to_numpy(dtype=bool), EVAL_OVERLAP)
    if settings.uses_quality:
        _drop(reason, ~np.isfinite(quality), QUALITY_MISSING)
    if settings.quality_floor is not None:
        with np.errstate(invalid="ignore"):
            _drop(reason, quality < settings.quality_floor, QUALITY_FLOOR)
    if settings.label_noise.drop:
        _drop(reason, flagged, LABEL_NOISE)
    if settings.drop_lowest_fraction > 0:
        _global_lowest(reason, usable, quality, settings.drop_lowest_fraction)
    if settings.per_identity.active:
        _identity_cap(reason, identity, quality, settings.per_identity)
    _small_identities(reason, identity, settings.min_identity_images)
    out = table.copy()
    out["keep"] = reason == KEPT
    out["reason"] = reason
    out["label_noise"] = flagged
    rule = np.full(len(out), None, dtype=object)  # the firing rule (noise.rule, per row) where flagged
    is_flagged = np.asarray(flagged, dtype=bool)
    rule[is_flagged] = np.asarray(noise.rule, dtype=object)[is_flagged]
    out["label_noise_rule"] = rule
    return out
