"""The FROQ calibration artifact: what calibration chose, as plain JSON (never pickle).

An artifact records the model it belongs to (``LoadedModel.identity()``: name, family, weights sha256,
embedding size, options, input contract), the candidate layers by NAME with their utilities and call counts,
the greedy curve, the selected layers, the settings (perturbations, top-n), the calibration set (digest,
digest kind, size), the precision the calibration forward passes ran in, software versions and a timestamp.

``calibration_id`` is the first 16 hex digits of the sha256 of the canonical JSON of everything except
``created_at`` (and the id itself): two calibrations with the same content share an id.

Undefined utilities (a layer whose norms are constant or not finite, or that was never called) are NaN in
memory and ``null`` in JSON.

Observer methods (``method``):

- ``greedy`` (the FROQ reference): quality = mean over ``selected_layers`` of their raw per-image L2 output norms.
- ``linear``: quality = intercept + sum_l w_l (log(max(n_l, 1e-30)) - mean_l) / scale_l over the layers of
  ``linear`` (names, weights, means, scales, intercept, ridge penalty, the identity-grouped cross-validation's
  mean held-out Spearman per penalty; :mod:`froq_ray.quality.linear`). The greedy fields are still filled (the
  utilities and greedy curve against the same target) for comparison; they do not score.

Schema versions: version 1 files have no ``method``, ``linear`` or ``quality_quantiles`` and load as ``greedy``
with their calibration id unchanged (an artifact with none of the newer fields is still written as version 1).
Version 2 adds ``method``, ``linear`` (null for greedy) and ``quality_quantiles``: 1,001 quantiles of the
calibration set's own quality under this observer (:mod:`froq_ray.quality.percentile`; null when absent),
from which ``quality_percentile`` is read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..models.base import LoadedModel
from ..versions import software_versions
from .linear import LinearObserver
from .percentile import quality_percentile

SCHEMA = "froq-calibration"
SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
METHODS = ("greedy", "linear")
IDENTITY_KEYS = ("name", "family", "weights_sha256", "embedding_size", "options", "input_contract")
DIGEST_KINDS = ("sorted_image_ids", "sorted_pixel_sha256")


class ArtifactError(UserError, ValueError):
    """The artifact file is missing, not JSON, or does not follow the schema."""


class ArtifactMismatchError(UserError, ValueError):
    """The artifact was made for another model (name, weights, options, contract or layers differ)."""


# ------------------------------------------------------------------------------------- calibration set
@dataclass(frozen=True)
class CalibrationSet:
    """Which images calibrated: ``digest`` = sha256 over the sorted per-image keys, one per line.

    ``digest_kind`` says what the keys are: ``sorted_image_ids`` (ids or paths as given) or
    ``sorted_pixel_sha256`` (sha256 of each crop's shape and uint8 pixel bytes). Sorting makes the digest
    independent of the order the images were seen in (e.g. by parallel workers).
    """

    digest: str
    digest_kind: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "digest_kind": self.digest_kind, "size": self.size}


class CalibrationSetDigest:
    """Accumulates per-image keys (ids, or pixel hashes) and produces a :class:`CalibrationSet`."""

    def __init__(self) -> None:
        self._keys: list[str] = []
        self._kind: str | None = None

    def _use(self, kind: str) -> None:
        if self._kind not in (None, kind):
            raise ValueError(f"cannot mix digest kinds {self._kind} and {kind}")
        self._kind = kind

    def add_ids(self, ids: Iterable[str]) -> None:
        self._use("sorted_image_ids")
        self._keys.extend(str(i) for i in ids)

    def add_pixels(self, crops: np.ndarray | torch.Tensor) -> None:
        """Add one batch of uint8 crops (N, H, W, C)."""
        self._use("sorted_pixel_sha256")
        array = crops.detach().cpu().numpy() if isinstance(crops, torch.Tensor) else np.asarray(crops)
        if array.dtype != np.uint8:
            raise TypeError(f"pixel digests need uint8 crops, got {array.dtype}")
        for image in array:
            h = hashlib.sha256(repr(image.shape).encode())
            h.update(np.ascontiguousarray(image).tobytes())
            self._keys.append(h.hexdigest())

    def result(self) -> CalibrationSet:
        if self._kind is None:
            raise ValueError("no calibration images were digested")
        digest = hashlib.sha256("\n".join(sorted(self._keys)).encode()).hexdigest()
        return CalibrationSet(digest, self._kind, len(self._keys))


# -------------------------------------------------------------------------------------------- artifact
def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _json_normalised(value: Any) -> Any:
    """What ``value`` becomes after a JSON round trip (tuples -> lists, ...), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True))


@dataclass
class CalibrationArtifact:
    model: dict[str, Any]
    utilities: dict[str, float]
    layer_calls: dict[str, int]
    top_layers: list[str]
    greedy_curve: list[tuple[str, float]]
    selected_layers: list[str]
    settings: dict[str, Any]
    calibration_set: CalibrationSet
    precision: str
    software: dict[str, str] = field(default_factory=software_versions)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    method: str = "greedy"
    linear: LinearObserver | None = None
    quality_quantiles: list[float] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"observer method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if (self.method == "linear") != (self.linear is not None):
            raise ValueError("a linear artifact needs its linear observer, and only a linear one has it")

    @property
    def candidate_layers(self) -> list[str]:
        return list(self.utilities)

    @property
    def scoring_layers(self) -> list[str]:
        """The layers whose norms make the quality: ``selected_layers`` (greedy) or the linear observer's layers
        with a non-zero weight (linear)."""
        return self.linear.scoring_layers if self.linear is not None else list(self.selected_layers)

    @property
    def schema_version(self) -> int:
        """1 when the artifact has none of the version 2 fields (greedy, no quantiles), else 2."""
        return 1 if self.method == "greedy" and self.quality_quantiles is None else 2

    def percentile(self, quality: np.ndarray) -> np.ndarray:
        """Quality -> percentile (0-100, float32) against the calibration set (``quality_percentile``);
        ``ValueError`` when the artifact stores no quantiles."""
        if self.quality_quantiles is None:
            raise ValueError(f"calibration {self.calibration_id} stores no quality quantiles")
        return quality_percentile(quality, np.asarray(self.quality_quantiles))

    @property
    def best_rho(self) -> float:
        """The Spearman correlation of the selected set with the pseudo-labels (max of the greedy curve)."""
        return self.greedy_curve[len(self.selected_layers) - 1][1]

    def content(self) -> dict[str, Any]:
        """Everything that identifies the calibration (the hashed part: no timestamp, no id)."""
        content = {
            "schema": SCHEMA,
            "schema_version": self.schema_version,
            "model": _json_normalised(self.model),
            "utilities": {name: _json_float(u) for name, u in self.utilities.items()},
            "layer_calls": dict(self.layer_calls),
            "top_layers": list(self.top_layers),
            "greedy_curve": [[name, _json_float(rho)] for name, rho in self.greedy_curve],
            "selected_layers": list(self.selected_layers),
            "best_rho": _json_float(self.best_rho),
            "settings": _json_normalised(self.settings),
            "calibration_set": self.calibration_set.to_dict(),
            "precision": self.precision,
            "software": dict(self.software),
        }
        if self.schema_version >= 2:
            content["method"] = self.method
            content["linear"] = None if self.linear is None else self.linear.to_dict()
            content["quality_quantiles"] = (
                None if self.quality_quantiles is None else [float(q) for q in self.quality_quantiles]
            )
        return content

    @property
    def calibration_id(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"calibration_id": self.calibration_id, "created_at": self.created_at, **self.content()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "artifact") -> CalibrationArtifact:
        _validate(data, source)
        artifact = cls(
            model=data["model"],
            utilities={k: (math.nan if v is None else float(v)) for k, v in data["utilities"].items()},
            layer_calls={k: int(v) for k, v in data["layer_calls"].items()},
            top_layers=list(data["top_layers"]),
            greedy_curve=[
                (name, math.nan if rho is None else float(rho)) for name, rho in data["greedy_curve"]
            ],
            selected_layers=list(data["selected_layers"]),
            settings=data["settings"],
            calibration_set=CalibrationSet(**data["calibration_set"]),
            precision=data["precision"],
            software=data["software"],
            created_at=data["created_at"],
            method=data.get("method", "greedy"),
            linear=None if data.get("linear") is None else LinearObserver.from_dict(data["linear"]),
            quality_quantiles=data.get("quality_quantiles"),
        )
        stored = data.get("calibration_id")
        if stored is not None and stored != artifact.calibration_id:
            raise ArtifactError(
                f"{source}: calibration_id {stored} does not match its content ({artifact.calibration_id}); "
                "the file was edited or corrupted"
            )
        return artifact

    @classmethod
    def from_bytes(cls, raw: bytes, source: str = "artifact") -> CalibrationArtifact:
        """:meth:`from_json` of a file's bytes; :class:`ArtifactError` naming ``source`` when they are not UTF-8
        text (an image or another binary file)."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArtifactError(
                f"{source} is not a calibration.json: not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})"
            ) from None
        return cls.from_json(text, source)

    @classmethod
    def from_json(cls, text: str, source: str = "artifact") -> CalibrationArtifact:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{source} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source)


def load_artifact(path: str | Path) -> CalibrationArtifact:
    """Read and validate a calibration artifact; errors name the file and what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"calibration artifact {path} is a folder, not a calibration.json file")
    if not path.is_file():
        raise ArtifactError(f"calibration artifact not found: {path}")
    return CalibrationArtifact.from_bytes(path.read_bytes(), source=str(path))


# ---------------------------------------------------------------------------------------- validation
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "schema_version": int,
    "created_at": str,
    "model": dict,
    "utilities": dict,
    "layer_calls": dict,
    "top_layers": list,
    "greedy_curve": list,
    "selected_layers": list,
    "settings": dict,
    "calibration_set": dict,
    "precision": str,
    "software": dict,
}


def _validate(data: Any, source: str) -> None:
    def fail(problem: str) -> None:
        raise ArtifactError(f"{source}: {problem}")

    if not isinstance(data, dict):
        fail(f"expected a JSON object, got {type(data).__name__}")
    for key, kind in _REQUIRED.items():
        if key not in data:
            fail(f"missing field {key!r}")
        if not isinstance(data[key], kind):
            fail(f"field {key!r} must be {getattr(kind, '__name__', kind)}, got {type(data[key]).__name__}")
    if data["schema"] != SCHEMA or data["schema_version"] not in SCHEMA_VERSIONS:
        fail(
            f"unsupported schema {data['schema']!r} v{data['schema_version']} (expected {SCHEMA!r} "
            f"v{' or v'.join(map(str, SCHEMA_VERSIONS))})"
        )
    if data["schema_version"] >= 2:
        for key in ("method", "linear", "quality_quantiles"):
            if key not in data:
                fail(f"missing field {key!r} (schema version 2)")
        if data["method"] not in METHODS:
            fail(f"method must be one of {', '.join(METHODS)}, got {data['method']!r}")
        if (data["method"] == "linear") != isinstance(data["linear"], dict):
            fail("linear must be an object exactly when method is 'linear'")
        if data["linear"] is not None:
            try:
                LinearObserver.from_dict(data["linear"])
            except (ValueError, TypeError) as exc:
                fail(str(exc))
            unknown = [n for n in data["linear"]["layers"] if n not in data["utilities"]]
            if unknown:
                fail(f"linear names layers without a utility: {', '.join(map(str, unknown))}")
        quantiles = data["quality_quantiles"]
        if quantiles is not None and not (
            isinstance(quantiles, list)
            and len(quantiles) >= 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in quantiles)
            and all(a <= b for a, b in zip(quantiles[:-1], quantiles[1:], strict=True))
        ):
            fail("quality_quantiles must be null or at least 2 finite, non-decreasing numbers")
    missing_identity = [k for k in IDENTITY_KEYS if k not in data["model"]]
    if missing_identity:
        fail(f"model identity lacks {', '.join(missing_identity)}")
    for name, value in data["utilities"].items():
        if value is not None and not isinstance(value, (int, float)):
            fail(f"utility of layer {name!r} must be a number or null")
    for entry in data["greedy_curve"]:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and (entry[1] is None or isinstance(entry[1], (int, float)))
        ):
            fail(f"greedy_curve entries must be [layer, rho], got {entry!r}")
    known = set(data["utilities"])
    for key in ("top_layers", "selected_layers"):
        unknown = [n for n in data[key] if n not in known]
        if unknown:
            fail(f"{key} names layers without a utility: {', '.join(map(str, unknown))}")
    curve_layers = [entry[0] for entry in data["greedy_curve"]]
    selected = data["selected_layers"]
    if not selected or curve_layers[: len(selected)] != selected:
        fail("selected_layers must be a non-empty prefix of the greedy curve's layers")
    if sorted(data["calibration_set"]) != ["digest", "digest_kind", "size"]:
        fail("calibration_set must hold exactly digest, digest_kind and size")
    if data["calibration_set"]["digest_kind"] not in DIGEST_KINDS:
        fail(f"calibration_set.digest_kind must be one of {DIGEST_KINDS}")


# ---------------------------------------------------------------------------------------------- matching
def check_matches(artifact: CalibrationArtifact, model: LoadedModel) -> None:
    """Raise :class:`ArtifactMismatchError` unless ``artifact`` was calibrated on this very model."""
    expected = _json_normalised({k: artifact.model.get(k) for k in IDENTITY_KEYS})
    actual = _json_normalised({k: model.identity().get(k) for k in IDENTITY_KEYS})
    differences = [
        f"{key}: artifact has {expected[key]!r}, model has {actual[key]!r}"
        for key in IDENTITY_KEYS
        if expected[key] != actual[key]
    ]
    if differences:
        raise ArtifactMismatchError(
            f"calibration {artifact.calibration_id} was made for model {expected['name']!r} and cannot be applied "
            f"to model {actual['name']!r}: " + "; ".join(differences)
        )
    modules = dict(model.network.named_modules())
    absent = [name for name in artifact.scoring_layers if name not in modules or name == ""]
    if absent:
        raise ArtifactMismatchError(
            f"calibration {artifact.calibration_id}: scoring layers not found in model {model.name!r}: "
            + ", ".join(absent)
        )
