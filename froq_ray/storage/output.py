"""One output lifecycle for every job: ``output.mode`` applied the same way by annotate, calibrate, evaluate,
filter, distill and the distill job's self-training copies.

A job describes what it owns in its output folder with an :class:`OutputLayout` and opens the folder with
:func:`open_output` before it writes anything. That one function:

1. refuses an output that holds one of the job's inputs (an input in the folder itself or under a name the job
   owns, which ``overwrite`` would delete or a part would sit beside), in every mode, and (item 6) an output
   inside an input folder, before anything is created;
2. probes that the folder is writable (:func:`~froq_ray.storage.run_state.check_writable`);
3. refuses an output that holds another job's run (its ``_froq/run.json`` or ``_froq/manifest.json`` names
   another job; for a job without shards: shard files), in every mode: ``overwrite`` replaces only what the
   job owns, never what another job wrote;
4. refuses an output holding files the job would write or delete (its ``files``, ``part-NNNNN.parquet``
   shards) but no run record of the job (``_froq/run.json`` naming it, or no job as older versions wrote it;
   the older layout's ``_run.json``), in every mode, ``overwrite`` included: froq did not write them (a
   user's ``keep_list.parquet``, ``index.html``, ``edc.csv``, ``part-00005.parquet``), so no mode replaces
   or deletes them; every run records itself in ``_froq/run.json`` before it writes anything, and
   ``overwrite`` replaces that record only after deleting;
5. for a job writing ``part-NNNNN.parquet`` shards (not ``listed``), refuses an output holding any other
   top-level entry than its parts, its ``files`` and names starting with ``_`` or ``.`` (which pandas and
   pyarrow skip when reading the folder), in every mode: ``pandas.read_parquet(output)`` would read it with
   the parts;
6. for a job reading annotation or filter outputs (``dataset_inputs``), refuses an output inside one of its
   input folders (the folder of an input ``part-NNNNN.parquet`` or ``keep_list.parquet``, or an input folder
   itself), in every mode: ``pandas.read_parquet(input)`` would read the output's Parquet files with the
   input's. annotate and calibrate read image folders and list only the endings in ``input.extensions``
   (image extensions by default), so an output inside their input folder is never listed as input and is
   allowed, unless ``input.extensions`` names an ending froq writes (``.parquet``, ``.json``:
   ``listed_extensions``), which is refused the same way;
7. for a job whose file names come from its input (``listed``: the export job's identity folders), refuses an
   output holding any file no run of the job listed (outside ``_froq/``), in every mode: such a job could
   otherwise write over a file of the user's;
8. applies ``output.mode``:

   - ``error_if_exists``: refuses a folder holding anything the job owns (its files, shards, ``_froq/``
     records), naming the path, what is there and the key ``output.mode``; files the job does not own are fine;
   - ``overwrite``: deletes what the job owns (nothing else), then starts afresh;
   - ``resume`` (default): continues the run recorded in ``_froq/run.json``. A job with partial state
     (``resumable``: shards, training checkpoints) keeps it and refuses a changed config or input unless
     ``force`` (:func:`~froq_ray.storage.run_state.prepare_output` names what changed). A job without
     partial state (evaluate, filter) has nothing to continue: a finished run of the same config and input
     (:attr:`~froq_ray.storage.run_state.RunState.finished`) is left as it is (the job does nothing), anything
     else is computed again and replaces the job's files;

9. refuses an output inside the folder of a run that writes ``part-NNNNN.parquet`` shards (a folder above it
   holding ``_froq/run.json`` of a :data:`SHARD_JOBS` job), in every mode, before anything is created:
   ``pandas.read_parquet`` of that folder reads every Parquet file below it, so this output's files would be
   read as its rows (and its own resume refuses the foreign entry, item 5). Outputs inside other jobs' folders
   are allowed (the distill job keeps its self-training copies inside its own output);
10. records the run in ``_froq/run.json`` (job, config digest, input digest).

A ``listed`` job names the files of each shard in ``_froq/files-NNNNN.json`` (:func:`record_files`) before it
writes them, and in the shard's marker (``files``); it owns what those lists name, the lists themselves and
its ``files``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pandas as pd

from .annotations import KEEP_LIST
from .fs import LOCAL_PROTOCOLS, TEMP_MARK, is_local_fs, protocol_of, read_json, to_uri, write_json_atomic
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
from .shards import LEGACY_MARKER_RE, MARKER_RE, PART_RE, STATE_DIR, list_names, marker_name, read_markers

log = logging.getLogger("froq_ray")

FILE_LIST_RE = re.compile(r"^files-(\d{5,})\.json$")
"""A ``listed`` job's list of the files one shard writes, in ``_froq/`` (:func:`record_files`)."""

WRITTEN_ENDINGS = (".parquet", ".json")
"""File endings froq writes into an output folder (parts, bookkeeping)."""

SHARD_JOBS = frozenset({"annotate", "calibrate", "export", "self_training"})
"""The jobs whose layout writes ``part-NNNNN.parquet`` shards (``OutputLayout.shards``): no output may lie
inside their output folders (module doc, item 9)."""


@dataclass(frozen=True)
class OutputLayout:
    """What a job owns in its output folder.

    ``job``: the job's name, recorded in ``_froq/run.json``; ``files``: names relative to the output folder
    (files or folders) the job writes besides the ``_froq/`` records; ``shards``: the job writes
    ``part-NNNNN.parquet`` shards with completion markers; ``resumable``: the job keeps partial state between
    runs (shards, checkpoints) that ``resume`` continues; without it, ``resume`` of a finished run does nothing
    and of any other run computes everything again. ``files`` may name files in ``_froq/`` (``_froq/x.json``).
    ``listed``: the job's file names come from its input, so each shard lists them before writing
    (:func:`record_files`); the job owns what its lists name and refuses an output holding any other file
    outside ``_froq/`` (module doc). ``dataset_inputs``: the job's inputs are annotation or filter outputs read
    as folders, so its output may not lie inside one (module doc)."""

    job: str
    files: tuple[str, ...] = ()
    shards: bool = False
    resumable: bool = True
    listed: bool = False
    dataset_inputs: bool = False


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
    listed_extensions: Sequence[str] = (),
) -> RunState:
    """Check and prepare the output folder ``location`` for a run of ``layout.job`` (module doc); returns its
    state.

    ``config_digest`` / ``input_digest``: sha256 hex of the settings and of the input this run depends on
    (``input_digest=None``: listed after this call, see
    :func:`~froq_ray.storage.run_state.record_input_digest`); ``inputs``: URIs of the input files or folders
    the output may not hold; ``config`` / ``listing``: what the digests were computed from (recorded, so a
    refused resume names what changed); ``listed_extensions``: the file endings the job lists in its input
    folders (annotate, calibrate: ``input.extensions``; module doc, item 6); ``dry_run`` (``froq plan``): the
    same checks and decisions, nothing deleted or written. Raises
    :class:`~froq_ray.storage.run_state.OutputStateError` (one line naming the location's URI) and
    ``ValueError`` for an unknown ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    uri, storage_options = location.uri, location.storage_options
    fs, path = location.fs, location.path
    _check_inputs(uri, fs, path, layout, inputs, listed_extensions)  # before the probe creates the folder
    _check_not_inside_shard_output(uri, fs, path)
    if dry_run and is_local_fs(fs) and not fs.exists(path):
        _check_creatable(uri, path)  # a dry run creates no folder
    else:
        check_writable(uri, storage_options)
    fs.invalidate_cache(path)
    fs.invalidate_cache(f"{path}/{STATE_DIR}")
    names = list_names(fs, path)
    state_names = list_names(fs, f"{path}/{STATE_DIR}")
    _check_foreign(uri, fs, path, layout, names, state_names)
    entries = _entries(fs, path)
    present = [n for n in layout.files if _present(n, entries, state_names)]
    _check_unrecorded(uri, layout, names, state_names, present)
    _check_strays(uri, layout, entries)
    listed: list[str] = []
    if layout.listed:
        listed, lists = _listed_files(fs, path, state_names)
        _check_unlisted(uri, fs, path, layout, {*listed, *lists, *layout.files})
        listed = [n for n in listed if _lexists(fs, f"{path}/{n}")] + lists
    if mode == "error_if_exists":
        owned = [n for n in names if _is_shard_file(n) and n not in present] + present + listed
        owned += [f"{STATE_DIR}/{n}" for n in state_names if n in STATE_FILES or MARKER_RE.match(n)]
        owned = list(dict.fromkeys(owned))
        if owned:
            shown = ", ".join(owned[:5]) + (f" and {len(owned) - 5} more" if len(owned) > 5 else "")
            raise OutputStateError(
                f"output {uri} already holds {shown} and output.mode is error_if_exists: choose another "
                "output, or set output.mode to resume or overwrite"
            )
    if mode == "overwrite" and listed and not dry_run:
        log.info("output.mode=overwrite: deleting the %d file(s) earlier runs listed in %s", len(listed), uri)
        # markers first: an interrupted delete never leaves a marker whose files are gone
        for name in sorted(state_names):
            if MARKER_RE.match(name):
                fs.rm_file(f"{path}/{STATE_DIR}/{name}")
        _delete_listed(fs, path, listed)
    if mode == "overwrite" and present and not dry_run:
        log.info("output.mode=overwrite: deleting %s in %s", ", ".join(present), uri)
        for name in present:
            fs.rm(f"{path}/{name}", recursive=True)
        fs.invalidate_cache(path)
        fs.invalidate_cache(f"{path}/{STATE_DIR}")
    redo = mode == "resume" and not layout.resumable
    state = prepare_output(
        uri,
        storage_options,
        mode,
        config_digest,
        input_digest=input_digest,
        force=force or redo,  # nothing partial to protect: another run's results are simply computed again
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


def record_files(state: RunState, shard: int, files: Sequence[str]) -> None:
    """A ``listed`` job's shard ``shard`` will write ``files`` (names relative to the output folder): record
    them in ``_froq/files-NNNNN.json`` before writing any, so ``overwrite`` deletes them and no mode takes them
    for a user's files, even when the shard is interrupted."""
    write_json_atomic(state.fs, f"{state.path}/{STATE_DIR}/{file_list_name(shard)}", list(files))


def discard_listed_shards(state: RunState, keep: Collection[int]) -> int:
    """A ``listed`` job's shards other than ``keep`` (those with a file list or a marker) are undone before the
    run writes: each one's marker first, then the files its list and marker name, then its list; the kept
    markers stay in ``state.markers``. Call it with the shards whose marker matches this run's plan (a forced
    resume may have changed the shard size, the rows or the format; an interrupted shard has no marker), so
    nothing of another plan stays beside this one. Returns how many shards were undone."""
    fs, path = state.fs, state.path
    state_dir = f"{path}/{STATE_DIR}"
    fs.invalidate_cache(state_dir)
    lists = {int(m.group(1)): n for n in list_names(fs, state_dir) if (m := FILE_LIST_RE.match(n))}
    markers = read_markers(fs, path)
    undo = sorted((set(lists) | set(markers)) - set(keep))
    kept = {n for i in keep if i in markers for n in markers[i].get("files", ())}
    for index in undo:
        named = set(markers.get(index, {}).get("files", ()))
        if index in markers:
            fs.rm_file(f"{state_dir}/{marker_name(index)}")
        if index in lists:
            named.update(read_json(fs, f"{state_dir}/{lists[index]}"))
        named -= kept  # never a file a kept shard holds
        _delete_listed(fs, path, [n for n in sorted(named) if _lexists(fs, f"{path}/{n}")])
        if index in lists:
            fs.rm_file(f"{state_dir}/{lists[index]}")
    fs.invalidate_cache(state_dir)
    state.markers = {i: m for i, m in state.markers.items() if i in keep and i in markers}
    return len(undo)


def file_list_name(shard: int) -> str:
    """The name in ``_froq/`` of shard ``shard``'s file list (:func:`record_files`)."""
    return f"files-{shard:05d}.json"


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


def _present(name: str, entries: set[str], state_names: list[str]) -> bool:
    """Whether a name of a layout's ``files`` exists: at the top of the output, or (``_froq/x``) in ``_froq/``."""
    folder, base = posixpath.split(name)
    return base in state_names if folder == STATE_DIR else name in entries


def _listed_files(
    fs: fsspec.AbstractFileSystem, path: str, state_names: list[str]
) -> tuple[list[str], list[str]]:
    """(the files named by the file lists and markers of earlier runs, sorted; the lists, as ``_froq/...``)."""
    lists = [f"{STATE_DIR}/{n}" for n in state_names if FILE_LIST_RE.match(n)]
    named: set[str] = set()
    for name in lists:
        named.update(read_json(fs, f"{path}/{name}"))
    for marker in read_markers(fs, path).values():
        named.update(marker.get("files", ()))
    return sorted(named), sorted(lists)


def _lexists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether ``path`` exists; locally a symbolic link counts even when its target is gone."""
    return os.path.lexists(path) if is_local_fs(fs) else fs.exists(path)


def _check_unlisted(uri, fs, path, layout, owned: set[str]) -> None:
    """``listed`` layouts: refuse an output holding a file outside ``_froq/`` that no run of the job listed."""
    fs.invalidate_cache(path)
    try:
        found = fs.find(path)
    except FileNotFoundError:
        found = []
    prefix = path.rstrip("/") + "/"
    foreign = []
    for full in found:
        rel = full[len(prefix) :] if full.startswith(prefix) else full
        if rel in owned or rel.startswith(f"{STATE_DIR}/") or TEMP_MARK in posixpath.basename(rel):
            continue
        foreign.append(rel)
    if foreign:
        raise OutputStateError(
            f"output {uri} holds {len(foreign)} file(s) that {layout.job} did not write (e.g. {sorted(foreign)[0]}):"
            f" {layout.job} writes only into an empty folder or its own earlier output, so choose another output.uri"
        )


def _delete_listed(fs: fsspec.AbstractFileSystem, path: str, names: list[str]) -> None:
    """Delete the listed files (a link itself, never its target; locally also a folder they leave empty), the
    lists last."""
    lists = [n for n in names if n.startswith(f"{STATE_DIR}/")]
    for name in [*sorted(set(names) - set(lists)), *sorted(lists)]:
        full = f"{path}/{name}"
        if not is_local_fs(fs):
            if fs.exists(full):
                fs.rm_file(full)
            continue
        if os.path.lexists(full):
            os.remove(full)
            parent = os.path.dirname(full)
            if "/" in name and os.path.basename(parent) != STATE_DIR and not os.listdir(parent):
                os.rmdir(parent)
    fs.invalidate_cache(path)
    fs.invalidate_cache(f"{path}/{STATE_DIR}")


def _is_shard_file(name: str) -> bool:
    return bool(PART_RE.match(name) or LEGACY_MARKER_RE.match(name) or name == LEGACY_RUN_FILE)


def _shown(names: Sequence[str]) -> str:
    """Up to 5 names, then how many more."""
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _check_unrecorded(uri, layout, names, state_names, present) -> None:
    """Refuse files the job would write or delete in an output holding no run record of the job (module doc;
    another job's record was refused before)."""
    if posixpath.basename(RUN_FILE) in state_names or LEGACY_RUN_FILE in names:
        return
    at_risk = [n for n in names if PART_RE.match(n) and n not in present]
    at_risk = list(dict.fromkeys([*present, *at_risk]))
    if at_risk:
        raise OutputStateError(
            f"output {uri} holds {_shown(at_risk)}, which {layout.job} would write or delete, but no {RUN_FILE} "
            f"of {layout.job} (froq did not write them): no output.mode replaces them; choose another "
            "output.uri or remove them"
        )


def _check_strays(uri, layout, entries: set[str]) -> None:
    """Shard layouts (not ``listed``): refuse top-level entries a Parquet reader of the folder would read with
    the parts (module doc)."""
    if not layout.shards or layout.listed:
        return
    tops = {n.split("/", 1)[0] for n in layout.files if not n.startswith(f"{STATE_DIR}/")}
    strays = sorted(n for n in entries if not (PART_RE.match(n) or n in tops or n.startswith(("_", "."))))
    if strays:
        raise OutputStateError(
            f"output {uri} holds {_shown(strays)} beside the parts {layout.job} writes, which "
            f"pandas.read_parquet({uri}) would read with them: choose another output.uri or remove them"
        )


def _check_inputs(uri, fs, path, layout, inputs, listed_extensions: Sequence[str] = ()) -> None:
    """Refuse an input lying in the output folder itself, or under ``_froq/`` or a name the job owns; for
    ``dataset_inputs`` (or ``listed_extensions`` naming an ending froq writes), an output inside an input
    folder (module doc)."""
    local = is_local_fs(fs)

    def real(
        p: str,
    ) -> str:  # local paths compared with their symlinks resolved (a link must not get round it)
        return os.path.realpath(p) if local else p

    root = real(path.rstrip("/"))
    owned = (STATE_DIR, *layout.files)
    reads_outputs = layout.dataset_inputs or any(e.lower() in WRITTEN_ENDINGS for e in listed_extensions)
    for item in inputs:
        if (protocol_of(item) in LOCAL_PROTOCOLS) != local or (
            not local and protocol_of(item) != protocol_of(uri)
        ):
            continue  # another filesystem
        ipath = real(fs._strip_protocol(item).rstrip("/"))
        inside = ipath == root or posixpath.dirname(ipath) == root
        inside |= any(ipath == f"{root}/{n}" or ipath.startswith(f"{root}/{n}/") for n in owned)
        if inside:
            raise OutputStateError(
                f"output {uri} holds the input {item} ({layout.job} reads it): choose another output.uri"
            )
        if not reads_outputs:
            continue
        base = posixpath.basename(ipath)
        folder = posixpath.dirname(ipath) if PART_RE.match(base) or base == KEEP_LIST else ipath
        if folder and root.startswith(f"{folder}/"):
            raise OutputStateError(
                f"output {uri} lies inside the input folder {item if folder == ipath else posixpath.dirname(item)}"
                f" ({layout.job} reads it, and reading that folder would read the output's files with it):"
                " choose an output.uri outside it"
            )


def _check_creatable(uri: str, path: str) -> None:
    """A dry run's check of a local output folder that does not exist yet: its nearest existing parent must be
    a writable folder (nothing is created). Raises :class:`OutputStateError` naming ``uri``."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputStateError(f"output {uri} is not writable: cannot create it in {parent}")


def _check_not_inside_shard_output(uri: str, fs, path: str) -> None:
    """Refuse an output below a folder holding a :data:`SHARD_JOBS` run (module doc, item 9): each folder
    above ``path`` (local paths with their symlinks resolved) up to the root or bucket is checked for its
    ``_froq/run.json``."""
    local = is_local_fs(fs)
    current = os.path.realpath(path) if local else path.rstrip("/")
    while True:
        parent = posixpath.dirname(current)
        if not parent or parent == current:
            return
        record = f"{parent}/{RUN_FILE}"
        if fs.isfile(record):
            job = read_json(fs, record).get("job")
            if job in SHARD_JOBS:
                raise OutputStateError(
                    f"output {uri} lies inside {to_uri(fs, parent)}, the output of an earlier {job} run: reading "
                    "that folder (pandas.read_parquet) would read this output's files as its rows, and resuming it "
                    "would refuse them; choose an output.uri outside it"
                )
        current = parent


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
