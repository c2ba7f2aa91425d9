"""The state of an output location before a run: what is done, and whether this run may continue it.

An output folder holds only files this tool writes: ``_run.json`` (config digest, input digest, schema
version of the run that owns the folder), ``part-NNNNN.parquet`` + ``_part-NNNNN.done.json`` per shard,
``_manifest.json``, and transient ``.<name>.tmp-<hex>`` files. Modes:

- ``resume`` (default): keep shards whose marker exists; refuse when ``_run.json`` records another config
  or input digest (or schema version), unless ``force``; a folder with parts but no ``_run.json`` is refused
  too (its origin is unknown) unless ``force``.
- ``overwrite``: delete the files this tool writes (never anything else), then start afresh.
- ``error_if_exists``: fail when the folder holds any part or marker.

Two runs writing to one output at the same time are not supported.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec

from ..errors import UserError
from .fs import TEMP_MARK, check_reachable, is_local_fs, open_fs, read_json, write_json_atomic
from .manifest import MANIFEST_FILE
from .schema import SCHEMA_VERSION
from .shards import MARKER_RE, PART_RE, list_names, read_markers

RUN_FILE = "_run.json"
Mode = Literal["resume", "overwrite", "error_if_exists"]
MODES = ("resume", "overwrite", "error_if_exists")


class OutputStateError(UserError, RuntimeError):
    """The output location cannot be used as asked; the message names the location and the way out."""


@dataclass
class RunState:
    """What :func:`prepare_output` found and decided."""

    out_uri: str
    fs: fsspec.AbstractFileSystem
    path: str
    """``out_uri`` inside ``fs``: pass ``(fs, path)`` to :func:`froq_ray.storage.shards.write_shard`."""
    mode: str
    markers: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Completion markers kept from earlier runs, by shard index."""
    run_info: dict[str, Any] = field(default_factory=dict)
    """The ``_run.json`` content in force for this run."""
    resumed: bool = False
    """True when an earlier run of the same config and input is being continued."""
    forced: bool = False
    """True when a digest mismatch was overridden with ``force``."""

    @property
    def completed(self) -> frozenset[int]:
        return frozenset(self.markers)

    def is_done(self, shard_index: int, shard_input_digest: str | None = None) -> bool:
        """Marker present (and, when a digest is given, recorded for the same input rows)."""
        marker = self.markers.get(shard_index)
        if marker is None:
            return False
        return shard_input_digest is None or marker.get("input_digest") == shard_input_digest


def prepare_output(
    out_uri: str,
    storage_options: Mapping[str, Any] | None,
    mode: Mode,
    config_digest: str,
    input_digest: str,
    force: bool = False,
) -> RunState:
    """Check the output location against ``mode``, clean what must go, write ``_run.json``; see module doc."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    fs, path = open_fs(out_uri, storage_options)
    if is_local_fs(fs):
        fs.makedirs(path, exist_ok=True)
    fs.invalidate_cache(path)
    names = list_names(fs, path)
    run_info = {
        "config_digest": config_digest,
        "input_digest": input_digest,
        "schema_version": SCHEMA_VERSION,
    }
    state = RunState(out_uri=out_uri, fs=fs, path=path, mode=mode, run_info=run_info)

    if mode == "error_if_exists":
        shards = [n for n in names if PART_RE.match(n) or MARKER_RE.match(n)]
        if shards:
            raise OutputStateError(
                f"output {out_uri} already holds {len(shards)} shard file(s) and output.mode is "
                "error_if_exists: choose another output, or use mode resume or overwrite"
            )
    if mode == "overwrite":
        _delete(fs, path, [n for n in names if _owned(n)])
    else:  # leftovers of interrupted writes
        _delete(fs, path, [n for n in names if _TEMP_RE.match(n)])
    if mode == "resume":
        _check_resumable(state, names, force)

    if state.resumed and not state.forced:
        state.run_info = read_json(fs, f"{path}/{RUN_FILE}")
    else:
        run_info["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(fs, f"{path}/{RUN_FILE}", run_info)
    return state


def _check_resumable(state: RunState, names: list[str], force: bool) -> None:
    fs, path, out_uri = state.fs, state.path, state.out_uri
    has_shards = any(PART_RE.match(n) or MARKER_RE.match(n) for n in names)
    if RUN_FILE in names:
        stored = read_json(fs, f"{path}/{RUN_FILE}")
        problems = [
            f"{what} differs (stored {str(stored.get(key))[:12]}, now {str(state.run_info[key])[:12]})"
            for key, what in (
                ("config_digest", "the config"),
                ("input_digest", "the input listing"),
                ("schema_version", "the output schema version"),
            )
            if stored.get(key) != state.run_info[key]
        ]
    elif has_shards:
        problems = [f"it holds shard files but no {RUN_FILE}, so their config is unknown"]
    else:
        return
    if problems and not force:
        raise OutputStateError(
            f"cannot resume into {out_uri}: {'; '.join(problems)}. Use output.mode=overwrite to start again, "
            "another output location, or --force to resume anyway"
        )
    state.forced = bool(problems)
    state.markers = read_markers(fs, path)
    state.resumed = bool(state.markers) or RUN_FILE in names


_TEMP_RE = re.compile(
    r"^(\.(part-\d{5,}\.parquet|_part-\d{5,}\.done\.json|_run\.json|_manifest\.json)|_write_probe)"
    + re.escape(TEMP_MARK)
    + r"[0-9a-f]{32}$"
)


def _owned(name: str) -> bool:
    """Files this tool writes in an output folder (and their leftover temp files)."""
    if name in (RUN_FILE, MANIFEST_FILE):
        return True
    return any(pattern.match(name) for pattern in (PART_RE, MARKER_RE, _TEMP_RE))


def _delete(fs: fsspec.AbstractFileSystem, path: str, names: list[str]) -> None:
    # Markers first, so an interrupted delete never leaves a marker whose part is gone.
    ordered = sorted(names, key=lambda n: (not MARKER_RE.match(n), n))
    for name in ordered:
        fs.rm_file(f"{path}/{name}")
    if names:
        fs.invalidate_cache(path)


def check_writable(out_uri: str, storage_options: Mapping[str, Any] | None) -> None:
    """Write and delete a small probe object in ``out_uri``; raises :class:`OutputStateError` naming the URI
    and the cause when that fails. Local folders are created; S3 buckets never are. A remote endpoint that does
    not answer fails first, within seconds (:func:`~froq_ray.storage.fs.check_reachable`)."""
    check_reachable(out_uri, storage_options, access="write")
    fs, path = open_fs(out_uri, storage_options)
    probe = f"{path}/_write_probe{TEMP_MARK}{uuid.uuid4().hex}"
    try:
        if is_local_fs(fs):
            fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"froq_ray write probe\n")
        fs.rm_file(probe)
    except Exception as exc:  # noqa: BLE001 - any failure means "not writable"; report its cause
        raise OutputStateError(f"output {out_uri} is not writable: {type(exc).__name__}: {exc}") from None
