"""One output lifecycle for every job: ``output.mode`` applied the same way by annotate, calibrate, evaluate,
filter, distill and the distill job's self-training copies.

A job describes what it owns in its output folder with an :class:`OutputLayout` and opens the folder with
:func:`open_output` before it writes anything. That one function:

1. probes that the folder is writable (:func:`~froq_ray.storage.run_state.check_writable`);
2. refuses an output that holds one of the job's inputs (an input in the folder itself or under a name the job
   owns, which ``overwrite`` would delete or a part would sit beside), in every mode;
3. refuses an output that holds another job's run (its ``_froq/run.json`` or ``_froq/manifest.json`` names
   another job; for a job without shards: shard files), in every mode: ``overwrite`` replaces only what the
   job owns, never what another job wrote;
4. applies ``output.mode``:

   - ``error_if_exists``: refuses a folder holding anything the job owns (its files, shards, ``_froq/``
     records), naming the path, what is there and the key ``output.mode``; files the job does not own are fine;
   - ``overwrite``: deletes what the job owns (nothing else), then starts afresh;
   - ``resume`` (default): continues the run recorded in ``_froq/run.json``. A job with partial state
     (``resumable``: shards, training checkpoints) keeps it and refuses a changed config or input unless
     ``force`` (:func:`~froq_ray.storage.run_state.prepare_output` names what changed). A job without
     partial state (evaluate, filter) has nothing to continue: a finished run of the same config and input
     (:attr:`~froq_ray.storage.run_state.RunState.finished`) is left as it is (the job does nothing), anything
     else is computed again and replaces the job's files;

5. records the run in ``_froq/run.json`` (job, config digest, input digest).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pandas as pd

from .fs import LOCAL_PROTOCOLS, is_local_fs, protocol_of, read_json
from .location import Location
from .manifest import LEGACY_MANIFEST_FILE, MANIFEST_FILE
from .run_state import (
    LEGACY_RUN_FILE,
    MODES,
    RUN_FILE,
    STATE_FILES,
    Mode,
    OutputStateError,
    RunState,
    check_writable,
    prepare_output,
)
from .shards import LEGACY_MARKER_RE, MARKER_RE, PART_RE, STATE_DIR, list_names

log = logging.getLogger("froq_ray")


@dataclass(frozen=True)
class OutputLayout:
    """What a job owns in its output folder.

    ``job``: the job's name, recorded in ``_froq/run.json``; ``files``: names relative to the output folder
    (files or folders) the job writes besides the ``_froq/`` records; ``shards``: the job writes
    ``part-NNNNN.parquet`` shards with completion markers; ``resumable``: the job keeps partial state between
    runs (shards, checkpoints) that ``resume`` continues; without it, ``resume`` of a finished run does nothing
    and of any other run computes everything again."""

    job: str
    files: tuple[str, ...] = ()
    shards: bool = False
    resumable: bool = True


def open_output(
    location: Location,
    mode: Mode,
    layout: OutputLayout,
    *,
    config_digest: str,
    input_digest: str | None = None,
    inputs: Sequence[str] = (),
    force: bool = False,
    config: Mapping[str, Any] | None = None,
    listing: pd.DataFrame | None = None,
    dry_run: bool = False,
) -> RunState:
    """Check and prepare the output folder ``location`` for a run of ``layout.job`` (module doc); returns its
    state.

    ``config_digest`` / ``input_digest``: sha256 hex of the settings and of the input this run depends on
    (``input_digest=None``: listed after this call, see
    :func:`~froq_ray.storage.run_state.record_input_digest`); ``inputs``: URIs of the input files or folders
    the output may not hold; ``config`` / ``listing``: what the digests were computed from (recorded, so a
    refused resume names what changed); ``dry_run`` (``froq plan``): the same checks and decisions, nothing
    deleted or written. Raises :class:`~froq_ray.storage.run_state.OutputStateError` (one line
    naming the location's URI) and ``ValueError`` for an unknown ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    uri, storage_options = location.uri, location.storage_options
    check_writable(uri, storage_options)
    fs, path = location.fs, location.path
    _check_inputs(uri, fs, path, layout, inputs)
    fs.invalidate_cache(path)
    fs.invalidate_cache(f"{path}/{STATE_DIR}")
    names = list_names(fs, path)
    state_names = list_names(fs, f"{path}/{STATE_DIR}")
    _check_foreign(uri, fs, path, layout, names, state_names)
    entries = _entries(fs, path)
    present = [n for n in layout.files if n in entries]
    if mode == "error_if_exists":
        owned = [n for n in names if _is_shard_file(n) and n not in present] + present
        owned += [f"{STATE_DIR}/{n}" for n in state_names if n in STATE_FILES or MARKER_RE.match(n)]
        if owned:
            shown = ", ".join(owned[:5]) + (f" and {len(owned) - 5} more" if len(owned) > 5 else "")
            raise OutputStateError(
                f"output {uri} already holds {shown} and output.mode is error_if_exists: choose another "
                "output, or set output.mode to resume or overwrite"
            )
    if mode == "overwrite" and present and not dry_run:
        log.info("output.mode=overwrite: deleting %s in %s", ", ".join(present), uri)
        for name in present:
            fs.rm(f"{path}/{name}", recursive=True)
        fs.invalidate_cache(path)
    redo = mode == "resume" and not layout.resumable
    state = prepare_output(
        uri,
        storage_options,
        mode,
        config_digest,
        input_digest,
        force or redo,  # nothing partial to protect: another run's results are simply computed again
        config=config,
        listing=listing,
        job=layout.job,
        dry_run=dry_run,
    )
    state.finished = (
        state.resumed and not state.forced and fs.exists(f"{path}/{MANIFEST_FILE}") and mode == "resume"
    )
    if redo and not state.finished and present:
        log.info("output.mode=resume: %s holds no finished run of this config and input; computing it", uri)
    return state


def files_digest(files: Sequence[Any]) -> str:
    """sha256 (hex) of the given files (each with ``fs``, ``path`` and ``uri``, e.g.
    :class:`~froq_ray.storage.annotations.AnnotationFile`) by URI, size and modification time (``fs.ukey``: the
    object's ETag on S3), in order: the input digest of a job that reads whole files (evaluate, filter)."""
    h = hashlib.sha256()
    for file in files:
        h.update(f"{file.uri}\t{file.fs.ukey(file.path)}\n".encode())
    return h.hexdigest()


def _entries(fs: fsspec.AbstractFileSystem, path: str) -> set[str]:
    """Base names of the files and folders directly in ``path`` (empty when it does not exist)."""
    try:
        return {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=True)}
    except FileNotFoundError:
        return set()


def _is_shard_file(name: str) -> bool:
    return bool(PART_RE.match(name) or LEGACY_MARKER_RE.match(name) or name == LEGACY_RUN_FILE)


def _check_inputs(uri, fs, path, layout, inputs) -> None:
    """Refuse an input lying in the output folder itself, or under ``_froq/`` or a name the job owns."""
    root = path.rstrip("/")
    owned = (STATE_DIR, *layout.files)
    for item in inputs:
        if (protocol_of(item) in LOCAL_PROTOCOLS) != is_local_fs(fs) or (
            not is_local_fs(fs) and protocol_of(item) != protocol_of(uri)
        ):
            continue  # another filesystem
        ipath = fs._strip_protocol(item).rstrip("/")
        inside = ipath == root or posixpath.dirname(ipath) == root
        inside |= any(ipath == f"{root}/{n}" or ipath.startswith(f"{root}/{n}/") for n in owned)
        if inside:
            raise OutputStateError(
                f"output {uri} holds the input {item} ({layout.job} reads it): choose another output.uri"
            )


def _check_foreign(uri, fs, path, layout, names, state_names) -> None:
    """Refuse an output holding another job's run."""
    foreign: list[str] = []
    if not layout.shards:
        foreign = [n for n in names if _is_shard_file(n) and n not in layout.files]
        foreign += [f"{STATE_DIR}/{n}" for n in state_names if MARKER_RE.match(n)]
    for record, listed in (
        (RUN_FILE, posixpath.basename(RUN_FILE) in state_names),
        (MANIFEST_FILE, posixpath.basename(MANIFEST_FILE) in state_names),
        (LEGACY_MANIFEST_FILE, LEGACY_MANIFEST_FILE in names),
    ):
        if foreign or not listed:
            continue
        job = read_json(fs, f"{path}/{record}").get("job")
        if job is not None and job != layout.job:
            foreign = [f"{record} of a {job!r} run"]
    if foreign:
        raise OutputStateError(
            f"output {uri} holds another job's run ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}):"
            f" {layout.job} does not write there in any output.mode, so choose another output.uri"
        )
