"""Finding and storing calibration artifacts (local paths or object-store URIs; JSON only)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import BUILTIN
from ..models import LoadedModel
from ..quality.artifact import ArtifactError, CalibrationArtifact, check_matches
from ..storage.fs import open_fs

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def builtin_artifact_path(model_name: str) -> Path:
    return ASSETS / f"{model_name}.calibration.json"


def read_artifact(
    uri: str, model: LoadedModel, storage_options: Mapping[str, Any] | None = None
) -> CalibrationArtifact:
    """Load ``uri`` (or the built-in artifact of ``model``) and check that it was made for this model."""
    if uri == BUILTIN:
        builtin = builtin_artifact_path(model.name)
        if not builtin.is_file():
            raise ArtifactError(
                f"no built-in calibration ships for model {model.name!r}: run `froq calibrate` with this model "
                "and set calibration.artifact to the calibration.json it writes"
            )
        uri = str(builtin)
    fs, path = open_fs(uri, storage_options)
    if not fs.exists(path):
        raise ArtifactError(f"calibration artifact not found: {uri}")
    with fs.open(path, "rt") as f:
        artifact = CalibrationArtifact.from_json(f.read(), source=uri)
    check_matches(artifact, model)
    return artifact


def write_artifact(
    artifact: CalibrationArtifact, uri: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    from ..storage.fs import write_json_atomic

    fs, path = open_fs(uri, storage_options)
    write_json_atomic(fs, path, artifact.to_dict())
