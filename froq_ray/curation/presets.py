"""Per-model thresholds for the filter's label-noise flags, near-duplicates, identity merges and eval overlap.

Cosine similarities are not comparable across face-recognition models (dlib's 128-d embeddings are not centred:
two different people often have cosine > 0.8, where ArcFace-type models give ~0), so every threshold the filter
uses may be ``"preset"``: the value of the model that wrote the annotations (their ``model_id`` column,
``<name>@<digest>``), or of ``filter.model_preset`` when it names one. Values measured on LFW-dev (3,811
images, 2,086 identities, clean labels) are in docs/curation.md. A model without its own preset uses
:data:`DEFAULT_PRESET` (the label-noise values measured with MobileFaceNet; duplicate and merge values for
ArcFace-type margin-trained models, not measured here) and the summary says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PRESET = "preset"
"""The config value that means "this model's preset"."""


@dataclass(frozen=True)
class ThresholdPreset:
    """Cosine thresholds: ``ccs_floor`` (flag CCS below), ``margin`` (flag NNCCS - CCS above),
    ``duplicate`` (image pairs at or above), ``merge`` (identity centres at or above), ``eval_overlap``
    (an identity's centre or image at or above, to any evaluation embedding)."""

    ccs_floor: float
    margin: float
    duplicate: float
    merge: float
    eval_overlap: float
    measured: str


MODEL_PRESETS: Mapping[str, ThresholdPreset] = {
    model: ThresholdPreset(*thresholds, measured=measured)
    for model, thresholds, measured in (
        # model, (ccs_floor, margin, duplicate, merge, eval_overlap), what was measured
        (
            "mobilefacenet",
            (0.2, 0.0, 0.95, 0.7, 0.8),
            "label noise: MobileFaceNet on LFW-dev with 5% swapped labels; the rest not measured",
        ),
        (
            "dlib_resnet_v1",
            (0.90, 0.02, 0.99, 0.945, 0.95),
            "dlib_resnet_v1 on clean LFW-dev (docs/curation.md)",
        ),
    )
}
"""Each model's thresholds, one row a model (the columns in :class:`ThresholdPreset`'s field order)."""
DEFAULT_PRESET = MODEL_PRESETS["mobilefacenet"]
"""The preset of a model without its own (module doc)."""


def model_name(model_id: str | None) -> str | None:
    """``dlib_resnet_v1`` of ``dlib_resnet_v1@55533b28a958`` (None stays None)."""
    return None if model_id is None else str(model_id).split("@", 1)[0]


def preset_for(model: str | None) -> tuple[str, ThresholdPreset]:
    """(what the summary calls it, the preset) for a model name: its own preset, or the default one."""
    if model is not None and model in MODEL_PRESETS:
        return str(model), MODEL_PRESETS[model]
    return f"default (no preset for model {model or 'unknown'})", DEFAULT_PRESET


def resolve(value: float | str | None, preset: ThresholdPreset, field: str) -> float | None:
    """A config threshold: a number or None as typed, ``"preset"`` -> the preset's ``field``."""
    return float(getattr(preset, field)) if value == PRESET else value  # type: ignore[return-value]
