"""The student artifact: a folder (local or remote) that holds a trained student and says what it is.

Layout (format ``froq_ray.student``, schema_version ``"1"``)::

    weights.safetensors   the state dict (incl. the target_mean/target_std de-standardisation buffers)
    student.onnx          the same network as ONNX (input "pixels", output "quality", dynamic batch)
    card.json             what the student is: arch + options + input size (enough to rebuild it), the input
                          contract, the output, file sha256s, the ONNX-vs-PyTorch check, params and FLOPs,
                          plus whatever the caller adds (teacher, data, training settings, metrics)

``card.json`` is written last (atomically), so a folder with a card is a complete artifact; loading checks
the weights against the card's sha256 before reading them. Nothing is unpickled: weights are safetensors,
metadata is JSON. The student id is ``student-<arch>@<first 12 hex of the weights sha256>``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from ..errors import UserError
from ..imaging.contract import InputContract
from ..imaging.prepare import ModelInputTransform
from ..models.base import ModelLoadError, freeze, load_state_strict, sha256_file
from ..storage.fs import is_local_fs, open_fs, parent_uri, to_uri, write_bytes_atomic
from .cost import count_flops, count_params
from .export import ONNX_OPSET, check_onnx, export_onnx
from .students import StudentNetwork, build_student, student_contract

FORMAT = "froq_ray.student"
SCHEMA_VERSION = "1"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
ONNX_FILE = "student.onnx"
SOURCE_SIZE = 112
OUTPUT = {"name": "quality", "direction": "higher_is_better", "units": "teacher"}
REQUIRED_CARD_KEYS = (
    "format",
    "schema_version",
    "arch",
    "input_size",
    "arch_options",
    "input_contract",
    "output",
    "weights",
)
CHECK_SEED = 0
CHECK_BATCH = 4


class StudentArtifactError(UserError, ValueError):
    """A student artifact is missing, incomplete, corrupt, or not a student artifact at all."""


# ------------------------------------------------------------------------------------------------ save
def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_ready(value: Any) -> Any:
    """A copy that strict JSON accepts: numpy scalars/arrays -> Python, tuples -> lists, NaN/inf -> null."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_samples(network: StudentNetwork, samples: torch.Tensor | None) -> torch.Tensor:
    if samples is not None:
        return samples
    generator = torch.Generator().manual_seed(CHECK_SEED)
    size = network.input_size
    return torch.randn(CHECK_BATCH, 3, size, size, generator=generator)


def _write_files(
    folder: str, network: StudentNetwork, samples: torch.Tensor, tolerance: float
) -> dict[str, Any]:
    """Write weights and ONNX into the local ``folder``; return the card's file entries."""
    state = {name: t.detach().cpu().contiguous() for name, t in network.state_dict().items()}
    weights_path = os.path.join(folder, WEIGHTS_FILE)
    save_file(state, weights_path)
    onnx_path = os.path.join(folder, ONNX_FILE)
    export_onnx(network, onnx_path)
    diff = check_onnx(onnx_path, network, samples)
    if not diff <= tolerance:
        raise StudentArtifactError(
            f"ONNX export of student {network.arch!r} differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})"
        )
    return {
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(weights_path)},
        "onnx": {
            "file": ONNX_FILE,
            "sha256": sha256_file(onnx_path),
            "opset": ONNX_OPSET,
            "max_abs_diff_vs_pytorch": diff,
        },
    }


def build_card(network: StudentNetwork, card: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    """The caller's card plus the artifact's own fields (which win over same-named caller keys)."""
    contract = network.contract.to_dict()
    own = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "arch": network.arch,
        "input_size": network.input_size,
        "arch_options": dict(network.options),
        "input_contract": {
            **contract,
            "source_size": SOURCE_SIZE,
            "input": "uint8 RGB ArcFace-aligned crops",
        },
        "output": dict(OUTPUT),
        "params": count_params(network),
        "flops": count_flops(network, network.input_size, batch=1),
        **files,
    }
    return _json_ready({**card, **own})


def save_student_artifact(
    out_dir: str,
    network: StudentNetwork,
    card: dict[str, Any],
    check_samples: torch.Tensor | None = None,
    *,
    tolerance: float = 1e-4,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the artifact to ``out_dir`` (a local folder or a remote URI) and return its card.

    An existing card in ``out_dir`` is removed first, so an interrupted overwrite never leaves a card that
    describes other files. Raises :class:`StudentArtifactError` when the ONNX graph and PyTorch disagree by
    more than ``tolerance`` on ``check_samples`` (default: a seeded random batch).
    """
    samples = _check_samples(network, check_samples)
    fs, root = open_fs(out_dir, storage_options)
    card_path = posixpath.join(root, CARD_FILE)
    if fs.exists(card_path):
        fs.rm_file(card_path)
    if is_local_fs(fs):
        fs.makedirs(root, exist_ok=True)
        files = _write_files(root, network, samples, tolerance)
    else:
        with tempfile.TemporaryDirectory(prefix="froq-student-") as staging:
            files = _write_files(staging, network, samples, tolerance)
            for name in (WEIGHTS_FILE, ONNX_FILE):
                fs.put_file(os.path.join(staging, name), posixpath.join(root, name))
    full = build_card(network, card, files)
    text = json.dumps(full, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(fs, card_path, text.encode())
    return full


# ------------------------------------------------------------------------------------------------ load
@dataclass
class LoadedStudent:
    """A frozen student ready for inference, with its card and identity."""

    network: StudentNetwork
    contract: InputContract
    card: dict[str, Any]
    weights_sha256: str
    uri: str = field(default="")

    @property
    def arch(self) -> str:
        return self.network.arch

    @property
    def student_id(self) -> str:
        return f"student-{self.arch}@{self.weights_sha256[:12]}"

    def input_transform(self, source_size: int = SOURCE_SIZE) -> ModelInputTransform:
        """uint8 NHWC ArcFace crops of ``source_size`` -> the student's normalised input."""
        return ModelInputTransform(self.contract, source_size)


def _locate_card(uri: str, storage_options: dict[str, Any] | None) -> tuple[Any, str, str, str]:
    """(filesystem, artifact folder, card path, folder URI) for a folder URI or the URI of its card file."""
    fs, path = open_fs(uri, storage_options)
    path = path.rstrip("/") or path
    if fs.isdir(path):
        card_path = posixpath.join(path, CARD_FILE)
        if not fs.isfile(card_path):
            raise StudentArtifactError(
                f"{uri} is not a complete student artifact: no {CARD_FILE} in it "
                "(the card is written last, so an interrupted save leaves none)"
            )
        return fs, path, card_path, uri.rstrip("/")
    if fs.isfile(path):
        if not path.endswith(".json"):
            raise StudentArtifactError(
                f"{uri} is a file, not a student artifact folder (expected a folder holding {CARD_FILE}, "
                "or the card itself)"
            )
        return fs, posixpath.dirname(path), path, parent_uri(uri)
    raise StudentArtifactError(f"student artifact not found: {uri}")


def _read_card(fs: Any, card_path: str) -> dict[str, Any]:
    where = to_uri(fs, card_path)
    with fs.open(card_path, "rb") as f:
        raw = f.read()
    try:
        card = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudentArtifactError(f"{where}: the student card is not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise StudentArtifactError(
            f"{where}: a student card must be a JSON object, got {type(card).__name__}"
        )
    if card.get("format") != FORMAT:
        hint = " (this is a FROQ calibration artifact)" if card.get("schema") == "froq-calibration" else ""
        raise StudentArtifactError(
            f"{where}: not a student artifact card: format is {card.get('format')!r}, expected {FORMAT!r}{hint}"
        )
    if card.get("schema_version") != SCHEMA_VERSION:
        raise StudentArtifactError(
            f"{where}: unsupported student card schema_version {card.get('schema_version')!r} "
            f"(this version of froq_ray reads {SCHEMA_VERSION!r})"
        )
    missing = [key for key in REQUIRED_CARD_KEYS if key not in card]
    if missing:
        raise StudentArtifactError(f"{where}: student card lacks {', '.join(missing)}")
    weights = card["weights"]
    if not (
        isinstance(weights, dict)
        and isinstance(weights.get("file"), str)
        and isinstance(weights.get("sha256"), str)
    ):
        raise StudentArtifactError(f"{where}: card field 'weights' must hold 'file' and 'sha256' strings")
    if posixpath.basename(weights["file"]) != weights["file"] or weights["file"] in ("", ".", ".."):
        raise StudentArtifactError(
            f"{where}: weights file must be a plain name inside the artifact, got {weights['file']!r}"
        )
    if not isinstance(card["arch_options"], dict):
        raise StudentArtifactError(f"{where}: card field 'arch_options' must be an object")
    return card


def _build_network(card: dict[str, Any], where: str) -> StudentNetwork:
    options = {k: v for k, v in card["arch_options"].items() if k != "init_weights"}
    try:
        network = build_student(card["arch"], card["input_size"], options)
    except ValueError as exc:
        raise StudentArtifactError(f"{where}: cannot rebuild the student: {exc}") from exc
    network.options = dict(card["arch_options"])
    expected = network.contract.to_dict()
    recorded = (
        {k: card["input_contract"].get(k) for k in expected}
        if isinstance(card["input_contract"], dict)
        else None
    )
    if recorded != json.loads(json.dumps(expected)):
        raise StudentArtifactError(
            f"{where}: the card's input_contract {card['input_contract']!r} is not the contract of a "
            f"{card['arch']!r} student at input_size {card['input_size']} ({expected!r})"
        )
    return network


def load_student_artifact(uri: str, storage_options: dict[str, Any] | None = None) -> LoadedStudent:
    """Load a student artifact folder (or its ``card.json``) from a local path or a remote URI.

    Raises :class:`StudentArtifactError` naming the file and the problem: not found, no card, not a student
    card, unsupported schema, weights whose sha256 differs from the card, unreadable weights, or weights that
    do not fit the architecture the card names.
    """
    fs, folder, card_path, folder_uri = _locate_card(uri, storage_options)
    card = _read_card(fs, card_path)
    where = to_uri(fs, card_path)
    weights_path = to_uri(fs, posixpath.join(folder, card["weights"]["file"]))
    if not fs.isfile(weights_path):
        raise StudentArtifactError(f"{where}: weights file {weights_path} is missing")
    with fs.open(weights_path, "rb") as f:
        data = f.read()
    sha = _sha256_bytes(data)
    if sha != card["weights"]["sha256"]:
        raise StudentArtifactError(
            f"{weights_path}: sha256 {sha[:12]}... does not match the card's {card['weights']['sha256'][:12]}...: "
            "the weights are corrupt or replaced"
        )
    try:
        state = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types for truncated or malformed files
        raise StudentArtifactError(f"{weights_path}: cannot read the safetensors weights: {exc}") from exc
    network = _build_network(card, where)
    try:
        load_state_strict(network, state, f"student {card['arch']!r} ({weights_path})")
    except ModelLoadError as exc:
        raise StudentArtifactError(str(exc)) from exc
    freeze(network)
    return LoadedStudent(
        network=network,
        contract=student_contract(network.input_size),
        card=card,
        weights_sha256=sha,
        uri=folder_uri,
    )
