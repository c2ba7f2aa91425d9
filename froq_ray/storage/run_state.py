"""The state of an output location before a run: what is done, and whether this run may continue it.

An output folder holds only files this tool writes: ``part-NNNNN.parquet`` per shard at the top level, and in
the ``_froq/`` subfolder (see :mod:`froq_ray.storage.shards` for why) ``run.json`` (config digest, input
digest, schema version, the digested config and the input count of the run that owns the folder),
``inputs.parquet`` (that run's input listing: ``path``, ``identity``), ``part-NNNNN.done.json`` per shard,
``manifest.json`` and a job's own files (``calibration.json``); plus transient ``.<name>.tmp-<hex>`` files.
Modes:

- ``resume`` (default): keep shards whose marker exists; refuse when ``run.json`` records another config
  or input digest (or schema version), unless ``force``. The refusal names each changed config key (dotted,
  old -> new, credentials redacted) and, for changed inputs, the input counts and the first differing row.
  A folder with parts but no ``run.json`` is refused too (its origin is unknown) unless ``force``. A folder
  in the layout of older versions (``_run.json`` / ``_part-NNNNN.done.json`` beside the parts) is refused
  even with ``force``: its markers are not read, so ``overwrite`` it.
- ``overwrite``: delete the files this tool writes (never anything else; old-layout files included), then
  start afresh.
- ``error_if_exists``: fail when the folder holds any part or marker (old-layout markers included).

Two runs writing to one output at the same time are not supported.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from .fs import (
    REDACTED,
    TEMP_MARK,
    check_reachable,
    is_local_fs,
    open_fs,
    read_json,
    redact,
    write_bytes_atomic,
    write_json_atomic,
)
from .manifest import LEGACY_MANIFEST_FILE, redact_storage_options
from .schema import SCHEMA_VERSION, text_values
from .shards import (
    LEGACY_MARKER_RE,
    MARKER_RE,
    PART_RE,
    STATE_DIR,
    list_names,
    marker_name,
    part_name,
    read_markers,
)

RUN_FILE = f"{STATE_DIR}/run.json"
"""The run record, relative to the output folder."""
INPUTS_FILE = f"{STATE_DIR}/inputs.parquet"
"""The input listing of the run that owns the folder (``path``, ``identity``), relative to the output folder."""
LEGACY_RUN_FILE = "_run.json"
"""Where versions before the ``_froq/`` layout wrote the run record (beside the parts)."""
STATE_FILES = ("run.json", "inputs.parquet", "manifest.json", "calibration.json")
"""The files this tool writes in ``_froq/`` besides the markers."""
LEGACY_FILES = (LEGACY_RUN_FILE, LEGACY_MANIFEST_FILE, "_calibration.json")
"""Old-layout files beside the parts that ``overwrite`` deletes."""
MAX_CHANGES = 10
"""At most this many changed config keys are listed in a refusal."""
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
    """The ``run.json`` content in force for this run."""
    resumed: bool = False
    """True when an earlier run of the same config and input is being continued."""
    forced: bool = False
    """True when a digest mismatch was overridden with ``force``."""
    finished: bool = False
    """True when ``resume`` found a finished run (manifest written) of the same config and input; set by
    :func:`froq_ray.storage.output.open_output`."""

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
    *,
    input_digest: str | None,
    force: bool = False,
    config: Mapping[str, Any] | None = None,
    listing: pd.DataFrame | None = None,
    job: str | None = None,
    dry_run: bool = False,
) -> RunState:
    """Check the output location against ``mode``, clean what must go, write ``_froq/run.json``; see module doc.
    Jobs call it through :func:`froq_ray.storage.output.open_output` (the one output lifecycle), which adds the
    checks every job shares; ``job`` is recorded in ``run.json``. ``dry_run``: the same checks and decisions (the
    same refusals, the markers a resume keeps), but nothing is created, deleted or written (``froq plan``).

    ``config``: the JSON-able settings ``config_digest`` was computed from (recorded with every
    ``storage_options`` mapping redacted, so a refusal can name the keys that changed); ``listing``: the input
    listing ``input_digest`` was computed from (``path``, ``identity``; recorded as ``_froq/inputs.parquet``
    so a refusal can name the first differing input). ``input_digest=None``: the inputs are listed into the
    output after this call; :func:`record_input_digest` then checks and records their digest. Raises
    :class:`OutputStateError` (module doc) and ``ValueError`` for an unknown ``mode``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    fs, path = open_fs(out_uri, storage_options)
    if is_local_fs(fs) and not dry_run:
        fs.makedirs(path, exist_ok=True)
    state_dir = f"{path}/{STATE_DIR}"
    fs.invalidate_cache(path)
    fs.invalidate_cache(state_dir)
    names, state_names = list_names(fs, path), list_names(fs, state_dir)
    run_info: dict[str, Any] = {
        **({"job": job} if job is not None else {}),
        "config_digest": config_digest,
        "input_digest": input_digest,
        "schema_version": SCHEMA_VERSION,
    }
    if config is not None:
        run_info["config"] = redact_storage_options(config)
    if listing is not None:
        run_info["inputs"] = len(listing)
    state = RunState(out_uri=out_uri, fs=fs, path=path, mode=mode, run_info=run_info)

    if mode == "error_if_exists":
        shards = [n for n in names if PART_RE.match(n) or LEGACY_MARKER_RE.match(n)]
        shards += [n for n in state_names if MARKER_RE.match(n)]
        if shards:
            raise OutputStateError(
                f"output {out_uri} already holds {len(shards)} shard file(s) and output.mode is "
                "error_if_exists: choose another output, or use mode resume or overwrite"
            )
    if mode == "overwrite" and not dry_run:
        # the run record goes last (replaced below): an interrupted delete leaves froq's files with their record
        _delete(
            fs,
            path,
            [n for n in names if _owned(n)],
            [n for n in state_names if _owned_state(n) and n != posixpath.basename(RUN_FILE)],
        )
        inputs_dir = f"{state_dir}/inputs"  # the listing of the run being replaced (engine.inputs.INPUTS_DIR)
        if fs.exists(inputs_dir):
            fs.rm(inputs_dir, recursive=True)
            fs.invalidate_cache(state_dir)
    elif not dry_run:  # leftovers of interrupted writes
        _delete(
            fs, path, [n for n in names if _TEMP_RE.match(n)], [n for n in state_names if _TEMP_RE.match(n)]
        )
    if mode == "resume":
        _check_resumable(state, names, state_names, force, listing)

    if state.resumed and not state.forced:
        state.run_info = read_json(fs, f"{path}/{RUN_FILE}")
    elif not dry_run:
        run_info["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if listing is not None:
            write_bytes_atomic(fs, f"{path}/{INPUTS_FILE}", _listing_parquet(listing))
        write_json_atomic(fs, f"{path}/{RUN_FILE}", run_info)
    return state


def _check_resumable(
    state: RunState, names: list[str], state_names: list[str], force: bool, listing: pd.DataFrame | None
) -> None:
    fs, path, out_uri = state.fs, state.path, state.out_uri
    legacy = [n for n in names if n == LEGACY_RUN_FILE or LEGACY_MARKER_RE.match(n)]
    if legacy:
        raise OutputStateError(
            f"cannot resume into {out_uri}: it was written by an older froq_ray that kept its bookkeeping beside "
            f"the parts ({legacy[0]}{' ...' if len(legacy) > 1 else ''}), which this version does not read "
            "(--force does not change that). Use output.mode=overwrite to start again, or another output location"
        )
    has_shards = any(PART_RE.match(n) for n in names) or any(MARKER_RE.match(n) for n in state_names)
    run_name = RUN_FILE.rsplit("/", 1)[-1]
    if run_name in state_names:
        stored = read_json(fs, f"{path}/{RUN_FILE}")
        problems = _differences(state, stored, listing)
    elif has_shards:
        problems = [f"it holds shard files but no {RUN_FILE}, so their config is unknown"]
    else:
        return
    if problems and not force:
        raise OutputStateError(
            f"cannot resume into {out_uri}: {'; '.join(p.splitlines()[0] for p in problems)}. "
            "Use output.mode=overwrite to start again, another output location, or --force to resume anyway"
            + "".join("\n" + "\n".join(p.splitlines()[1:]) for p in problems if "\n" in p)
        )
    state.forced = bool(problems)
    state.markers = read_markers(fs, path)
    state.resumed = bool(state.markers) or run_name in state_names


def _differences(state: RunState, stored: Mapping[str, Any], listing: pd.DataFrame | None) -> list[str]:
    """What differs between the stored run record and this run: a first line each, then detail lines."""
    now = state.run_info
    problems = []
    if stored.get("config_digest") != now["config_digest"]:
        changes = (
            config_changes(stored["config"], now["config"]) if "config" in stored and "config" in now else []
        )
        if changes:
            problems.append(
                f"the config differs in {len(changes)} key(s) (listed below)\n"
                + "\n".join(f"  {line}" for line in _limited(changes, MAX_CHANGES))
            )
        else:
            problems.append(
                f"the config differs (stored digest {str(stored.get('config_digest'))[:12]}, "
                f"now {now['config_digest'][:12]})"
            )
    if now["input_digest"] is not None and stored.get("input_digest") != now["input_digest"]:
        detail = _input_change(state, stored, listing)
        problems.append(
            "the input listing differs"
            + (
                f"\n  inputs: {detail}"
                if detail
                else f" (stored digest {str(stored.get('input_digest'))[:12]}, now {now['input_digest'][:12]})"
            )
        )
    if stored.get("schema_version") != now["schema_version"]:
        problems.append(
            f"the output schema version differs (stored {stored.get('schema_version')}, now {now['schema_version']})"
        )
    return problems


def record_input_digest(
    state: RunState, input_digest: str, force: bool = False, dry_run: bool = False
) -> None:
    """Check the digest of the inputs listed for this run against the run record, then record it.

    A resumed run normally reuses the listing of the run it continues (same digest). The inputs are listed
    again only when that listing never finished; if the input changed meanwhile the resume is refused, as
    :func:`prepare_output` refuses a changed config, unless ``force``. Raises :class:`OutputStateError`.
    ``dry_run``: the check and ``state`` updated, nothing written."""
    stored = state.run_info.get("input_digest")
    if stored == input_digest:
        return
    if stored is not None and state.resumed and not force:
        raise OutputStateError(
            f"cannot resume into {state.out_uri}: the input listing differs (stored digest {stored[:12]}, now "
            f"{input_digest[:12]}; the earlier run's listing did not finish and the input changed since). Use "
            "output.mode=overwrite to start again, another output location, or --force to resume anyway"
        )
    state.forced = state.forced or stored is not None
    state.run_info = {**state.run_info, "input_digest": input_digest}
    if not dry_run:
        write_json_atomic(state.fs, f"{state.path}/{RUN_FILE}", state.run_info)


def discard_stale_shards(
    state: RunState,
    bounds: Mapping[int, tuple[int, int]],
    inputs_digest: str | None = None,
    dry_run: bool = False,
) -> int:
    """Delete every part and marker that does not belong to this run's shard plan, before it writes.

    ``bounds``: shard index -> ``(start, stop)`` rows of the plan. A marker of an index outside the plan or with
    other bounds (an earlier run with another ``output.shard_size``, resumed with ``--force``), made from another
    input listing (``inputs_digest``: a forced resume that listed the input again) or whose part is missing, and a
    part without a kept marker (a write that was interrupted), are removed, markers first; the rest stays in
    ``state.markers``. Returns how many files were deleted (``dry_run``: would be; nothing is deleted). Without
    this, a forced resume under a new shard
    layout would keep old parts beside new ones, and rows would appear twice. A marker recording the part's size
    in bytes (``bytes``, :func:`~froq_ray.storage.shards.write_shard`) whose part now has another size (a
    truncated or replaced part) is stale too, so the shard is redone; a marker without ``bytes`` (written by
    versions before it was recorded) is trusted as before."""
    fs, path = state.fs, state.path
    fs.invalidate_cache(path)
    sizes = _part_sizes(fs, path)
    parts = {n: int(m.group(1)) for n in sizes if (m := PART_RE.match(n))}  # name -> index
    keep = {
        i: m
        for i, m in state.markers.items()
        if (m.get("start"), m.get("stop")) == bounds.get(i)
        and part_name(i) in parts
        and (inputs_digest is None or m.get("inputs_digest") == inputs_digest)
        and m.get("bytes", sizes[part_name(i)]) == sizes[part_name(i)]
    }
    stale_markers = [marker_name(i) for i in state.markers if i not in keep]
    stale_parts = [n for n, i in parts.items() if i not in keep]
    if not dry_run:
        _delete(fs, path, stale_parts, stale_markers)
    state.markers = keep
    return len(stale_markers) + len(stale_parts)


def _part_sizes(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, int | None]:
    """Size in bytes of each file directly in ``path``, by base name (empty when it does not exist)."""
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    return {
        e["name"].rstrip("/").rsplit("/", 1)[-1]: e.get("size")
        for e in entries
        if e.get("type") != "directory"
    }


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One line per changed leaf key, ``dotted.key: old -> new`` (JSON values; ``(absent)`` where a side lacks
    the key; a secret-looking key's values as ``***``), sorted by key. Lists compare as whole values."""
    before, after = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if a != b:
            secret = redact({key.rsplit(".", 1)[-1]: 0}) != {key.rsplit(".", 1)[-1]: 0}
            lines.append(f"{key}: {_show(a, secret)} -> {_show(b, secret)}")
    return lines


_ABSENT = object()


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(
            value, Mapping
        ):  # an empty mapping has no leaves: {} -> {"x": 1} shows as x: (absent) -> 1
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _show(value: Any, secret: bool) -> str:
    if value is _ABSENT:
        return "(absent)"
    if secret and value != REDACTED:
        return REDACTED
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _limited(lines: list[str], limit: int) -> list[str]:
    return lines if len(lines) <= limit else [*lines[:limit], f"... and {len(lines) - limit} more"]


def _input_change(state: RunState, stored: Mapping[str, Any], listing: pd.DataFrame | None) -> str:
    """``N before, M now; first difference at row i: ...`` from the recorded listing, or '' without one."""
    if listing is None:
        return ""
    path = f"{state.path}/{INPUTS_FILE}"
    if not state.fs.exists(path):
        count = stored.get("inputs")
        return f"{count} before, {len(listing)} now" if count is not None else ""
    with state.fs.open(path, "rb") as f:
        before = pq.read_table(f).to_pydict()
    old = list(zip(before["path"], before["identity"], strict=True))
    new = list(
        zip(text_values(listing["path"], "path"), text_values(listing["identity"], "identity"), strict=True)
    )
    head = f"{len(old)} before, {len(new)} now"
    # strict=False: the two listings may differ in length; the first extra row is reported after the loop
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        if a != b:
            return f"{head}; first difference at row {i}: {_row(a)} before, {_row(b)} now"
    if len(old) != len(new):
        i = min(len(old), len(new))
        extra = old[i] if len(old) > len(new) else new[i]
        return f"{head}; first difference at row {i}: {_row(extra)} {'only before' if len(old) > len(new) else 'new'}"
    return head


def _row(row: tuple[str | None, str | None]) -> str:
    path, identity = row
    return f"{path} (identity {identity!r})" if identity is not None else f"{path} (no identity)"


def _listing_parquet(listing: pd.DataFrame) -> bytes:
    table = pa.table(
        {
            "path": pa.array(text_values(listing["path"], "path"), pa.string()),
            "identity": pa.array(text_values(listing["identity"], "identity"), pa.string()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


_TEMP_RE = re.compile(
    r"^(\.(part-\d{5,}\.parquet|part-\d{5,}\.done\.json|_part-\d{5,}\.done\.json|"
    r"(_?)(run|manifest|calibration)\.json|inputs\.parquet)|_write_probe)"
    + re.escape(TEMP_MARK)
    + r"[0-9a-f]{32}$"
)


def _owned(name: str) -> bool:
    """Files this tool writes at the top of an output folder (old-layout files and leftover temps included)."""
    if name in LEGACY_FILES:
        return True
    return any(pattern.match(name) for pattern in (PART_RE, LEGACY_MARKER_RE, _TEMP_RE))


def _owned_state(name: str) -> bool:
    """Files this tool writes in ``_froq/``."""
    return name in STATE_FILES or any(pattern.match(name) for pattern in (MARKER_RE, _TEMP_RE))


def _delete(
    fs: fsspec.AbstractFileSystem, path: str, names: Sequence[str], state_names: Sequence[str] = ()
) -> None:
    # Markers first, so an interrupted delete never leaves a marker whose part is gone.
    state_dir = f"{path}/{STATE_DIR}"
    marker_first = sorted(state_names, key=lambda n: (not MARKER_RE.match(n), n))
    for name in marker_first:
        fs.rm_file(f"{state_dir}/{name}")
    for name in sorted(names, key=lambda n: (not LEGACY_MARKER_RE.match(n), n == LEGACY_RUN_FILE, n)):
        fs.rm_file(f"{path}/{name}")
    if names or state_names:
        fs.invalidate_cache(path)
        fs.invalidate_cache(state_dir)


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
