"""Finding and storing calibration artifacts (local paths or object-store URIs; JSON only)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import BUILTIN
from ..models import LoadedModel
from ..quality.artifact import ArtifactError, CalibrationArtifact, check_matches
from ..storage.fs import open_fs, to_uri
from ..storage.shards import STATE_DIR

ARTIFACT_FILE = f"{STATE_DIR}/calibration.json"
"""Where ``froq calibrate`` writes its artifact inside its output folder."""
ASSETS = Path(__file__).resolve().parents[1] / "assets"


def builtin_artifact_path(model_name: str) -> Path:
    return ASSETS / f"{model_name}.calibration.json"


def read_artifact(
    uri: str, model: LoadedModel, storage_options: Mapping[str, Any] | None = None
) -> CalibrationArtifact:
    """Load ``uri`` (or the built-in artifact of ``model``) and check that it was made for this model.

    Raises :class:`ArtifactError` (one line naming ``uri``) when it does not exist, is a folder (a calibrate
    output folder is not read for you: the message names its :data:`ARTIFACT_FILE` to pass instead), is not
    UTF-8 JSON (an image, say), does not follow the schema or was made for another model."""
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
    if fs.isdir(path):
        inside = f"{path.rstrip('/')}/{ARTIFACT_FILE}"
        hint = (
            f"pass the calibration.json inside it: {to_uri(fs, inside)}"
            if fs.isfile(inside)
            else "pass a calibration.json file (froq calibrate writes one to <output>/" + ARTIFACT_FILE + ")"
        )
        raise ArtifactError(f"calibration artifact {uri} is a folder, not a calibration.json: {hint}")
    with fs.open(path, "rb") as f:
        artifact = CalibrationArtifact.from_bytes(f.read(), source=uri)
    check_matches(artifact, model)
    return artifact


def write_artifact(
    artifact: CalibrationArtifact, uri: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    from ..storage.fs import write_json_atomic

    fs, path = open_fs(uri, storage_options)
    write_json_atomic(fs, path, artifact.to_dict())
