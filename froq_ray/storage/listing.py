"""List a job's inputs: one deterministic, path-sorted table of (path, identity) whatever the source, plus
what the listing left out and why.

Which source ``input.uri`` names is decided by what exists, never by how the text looks:

- an existing ``.parquet`` / ``.csv`` file: a manifest (see below); any other existing file is refused;
- an existing local directory or ``s3://`` prefix: listed recursively, filtered by extension
  (case-insensitive), even when its name holds ``[``, ``?`` or ``*`` (``faces [2019]`` is that folder);
- a URI that does not exist and holds glob characters (``*``, ``?``, ``[...]``): the files it matches
  (fsspec glob; ``**`` crosses folders), filtered by extension;
- anything else: "does not exist".

Local folders follow symbolic links: a link to a file is listed under the link's path; a link to a folder is
entered unless that real folder is already listed (through its own path or an earlier link; a link back to
an ancestor is a loop), so every real folder is read once. Every file and link left out is counted by reason
(``extension``, ``broken_symlink``, ``symlink_loop``, ``symlink_to_listed_folder``, ``not_a_regular_file``,
``folder``, ``unreadable_folder``), with the extensions' counts and the first few paths, in
:attr:`InputListing.skipped`; :func:`list_inputs` logs it on one line and jobs write it to the run manifest
(``input.skipped``).

Manifests: a ``path`` column (``input.path_column``) and an optional identity column. CSV is parsed strictly
(UTF-8, RFC 4180 quoting): every line must have as many fields as the header, else the error names the line
(1-based, the header is line 1). Data rows are numbered from 1 (the first row after the header) in every
error, for CSV and Parquet alike. Paths are used exactly as written (never stripped); an empty, blank or
null path is refused with its row; relative paths resolve against the manifest's folder; entries are not
filtered by extension or existence (a missing file becomes a ``read_error`` row). Identities: an empty
CSV cell, an empty string or a null is a missing identity (None); numbers are their exact text (``2019``).
A path listed twice is kept once and counted (``duplicates``, logged as a warning); a path listed with two
different identities is refused.

Paths are full URIs: plain absolute paths for local files, ``s3://bucket/key`` for objects; a local name
that is not valid UTF-8 is written as a percent-encoded ``file://`` URI (:func:`froq_ray.storage.fs.local_name`)
that the reader turns back into the real name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import posixpath
import re
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
import pyarrow.parquet as pq
from fsspec.core import split_protocol

from ..errors import UserError
from .fs import (
    folder_name,
    is_absolute_uri,
    is_local_fs,
    local_name,
    local_path,
    open_fs,
    parent_uri,
    to_uri,
)

log = logging.getLogger("froq_ray")


class InputSource(Protocol):
    """What listing reads from the job's ``input`` section (:class:`froq_ray.config.InputConfig` is one; storage
    does not import config, config imports storage -- see ``docs/architecture.md``).

    ``uri``: local path, ``s3://`` prefix, ``.parquet``/``.csv`` manifest or glob; ``extensions``: kept file name
    endings (lower case, with the dot) for folders and globs; ``path_column`` / ``identity_column``: manifest
    columns; ``identity_from_folder``: identity = parent folder name; ``storage_options``: fsspec options;
    ``limit``: keep the first ``limit`` inputs in path order (None = all)."""

    @property
    def uri(self) -> str: ...
    @property
    def extensions(self) -> Sequence[str]: ...
    @property
    def path_column(self) -> str: ...
    @property
    def identity_column(self) -> str | None: ...
    @property
    def identity_from_folder(self) -> bool: ...
    @property
    def storage_options(self) -> Mapping[str, Any]: ...
    @property
    def limit(self) -> int | None: ...


MANIFEST_SUFFIXES = (".parquet", ".csv")
_GLOB_CHARS = re.compile(r"[*?\[]")
EXAMPLES = 5
"""How many example paths :attr:`InputListing.skipped` names per reason."""


def has_magic(uri: str) -> bool:
    """True when ``uri`` holds glob characters (``*``, ``?``, ``[``)."""
    return bool(_GLOB_CHARS.search(uri))


MISSING_MARKERS = frozenset(
    {
        *("nan", "-nan", "none", "null", "na", "n/a", "<na>", "nat"),
        *("#n/a", "#n/a n/a", "#na", "1.#ind", "-1.#ind", "1.#qnan", "-1.#qnan"),  # spreadsheets, C runtimes
    }
)
"""Identity texts (compared stripped, case-folded) that other tools write for a missing value (pandas' default
NA texts, ``NaT``): a manifest identity that reads like one, or is empty or whitespace only (a Parquet ``''``,
a CSV cell ``'  '``), is kept as written and counted (``ListingCounts.missing_like_identities``,
:func:`missing_like`)."""


def missing_like(identity: str | None) -> bool:
    """True for a (non-null) identity text that reads like a missing value: empty, whitespace only, or one of
    :data:`MISSING_MARKERS` (``' NaN '``, ``'#N/A'``); False for None (a real null) and any other text."""
    if identity is None:
        return False
    text = identity.strip()
    return not text or text.casefold() in MISSING_MARKERS


class InputListingError(UserError, ValueError):
    """The inputs cannot be listed (missing, empty, malformed manifest); the message names the URI."""


@dataclass
class ListingCounts:
    """What a listing saw and left out (everything of :class:`InputListing` but the rows):

    - ``source``: ``"folder"``, ``"glob"`` or ``"manifest"``;
    - ``files_seen``: entries looked at: images listed (before ``limit``) + skipped (folders, globs), or
      manifest data rows;
    - ``skipped``: reason -> ``{"count": n, "examples": [first paths, sorted]}``; reason ``extension`` also
      has ``"by_extension"`` (``{".txt": n, "(none)": n}``, most frequent first);
    - ``followed_links``: symlinked folders entered (listing paths, sorted);
    - ``duplicates``: manifest rows naming a path listed earlier (merged);
    - ``beyond_limit``: rows dropped by ``input.limit``;
    - ``no_identity``: listed rows (before ``input.limit``) whose identity is null although one was asked for:
      with ``input.identity_from_folder``, files directly in the input's top folder
      (:func:`folder_identities`); with a manifest's ``input.identity_column``, rows whose cell is null (an
      empty CSV cell, a Parquet null or float NaN); 0 when no identity was asked for;
    - ``missing_like_identities``: manifest identities kept as text that read like a missing value
      (:func:`missing_like`: a :data:`MISSING_MARKERS` text such as ``NaN`` written by pandas or ``#N/A``, or an
      empty / whitespace-only text: a CSV cell ``'  '``, a Parquet ``''``), by text as written: values are used
      exactly as typed, and a warning says how to write a missing identity (an empty CSV cell or a null)."""

    source: str
    files_seen: int = 0
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    followed_links: list[str] = field(default_factory=list)
    duplicates: int = 0
    beyond_limit: int = 0
    no_identity: int = 0
    missing_like_identities: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(group["count"] for group in self.skipped.values())

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts for the run manifest's ``input`` section."""
        return {
            "source": self.source,
            "files_seen": self.files_seen,
            "skipped": {"total": self.skipped_total, "by_reason": self.skipped},
            "followed_links": len(self.followed_links),
            "duplicates": self.duplicates,
            "beyond_limit": self.beyond_limit,
            "no_identity": self.no_identity,
            "missing_like_identities": dict(self.missing_like_identities),
        }

    def skipped_line(self) -> str:
        """One line: ``skipped 3 file(s): extension=2 (.txt=1, .md=1), broken_symlink=1 (/x/a.jpg)``."""
        parts = []
        for reason, group in self.skipped.items():
            if reason == "extension":
                detail = ", ".join(f"{ext}={n}" for ext, n in group["by_extension"].items())
            else:
                detail = ", ".join(group["examples"]) + (
                    ", ..." if group["count"] > len(group["examples"]) else ""
                )
            parts.append(f"{reason}={group['count']} ({detail})")
        return f"skipped {self.skipped_total} file(s): " + ("; ".join(parts) if parts else "none")

    def log(self, cfg: InputSource) -> None:
        """One log line each for what was skipped (warning), followed, merged (warning) or cut by the limit."""
        if self.skipped:
            log.warning("inputs from %s: %s", cfg.uri, self.skipped_line())
        if self.followed_links:
            log.info(
                "inputs from %s: followed %d symlinked folder(s): %s",
                cfg.uri,
                len(self.followed_links),
                ", ".join(self.followed_links),
            )
        if self.no_identity and self.source == "manifest":
            log.warning(
                "input manifest %s: %d row(s) have no identity (an empty CSV cell or a Parquet null in column "
                "%r): identity null",
                cfg.uri,
                self.no_identity,
                cfg.identity_column,
            )
        elif self.no_identity:
            log.warning(
                "inputs from %s: %d file(s) lie directly in the input folder, outside any identity folder: "
                "identity null (input.identity_from_folder)",
                cfg.uri,
                self.no_identity,
            )
        if self.missing_like_identities:
            values = ", ".join(f"{v!r} x{n}" for v, n in self.missing_like_identities.items())
            log.warning(
                "input manifest %s: %d identity value(s) read like a missing value (%s) and are kept as the "
                "text identity as written; for an image without identity leave the cell empty (CSV) or null "
                "(Parquet)",
                cfg.uri,
                sum(self.missing_like_identities.values()),
                values,
            )
        if self.duplicates:
            log.warning(
                "input manifest %s: %d duplicate row(s) name a path listed earlier; each path kept once",
                cfg.uri,
                self.duplicates,
            )
        if self.beyond_limit and cfg.limit is not None:  # rows are dropped only by a limit
            log.info(
                "inputs from %s: input.limit=%d keeps %d of %d",
                cfg.uri,
                cfg.limit,
                cfg.limit,
                cfg.limit + self.beyond_limit,
            )


@dataclass
class InputListing(ListingCounts):
    """The result of :func:`list_inputs`: the counts of :class:`ListingCounts` plus ``table``, a DataFrame
    with columns ``path`` (str) and ``identity`` (str or None), sorted by path, unique paths, ``limit``
    applied."""

    table: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"path": [], "identity": []}, dtype=object)
    )


class _Skips:
    """Collects skipped paths by reason."""

    def __init__(self) -> None:
        self.paths: dict[str, list[str]] = {}
        self.extensions: Counter[str] = Counter()

    def add(self, reason: str, path: str) -> None:
        self.paths.setdefault(reason, []).append(path)
        if reason == "extension":
            suffix = posixpath.splitext(posixpath.basename(path))[1].lower()
            self.extensions[suffix or "(none)"] += 1

    def result(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for reason in sorted(self.paths):
            paths = sorted(self.paths[reason])
            out[reason] = {"count": len(paths), "examples": paths[:EXAMPLES]}
            if reason == "extension":
                out[reason]["by_extension"] = _by_extension(self.extensions)
        return out


def _by_extension(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def merge_skipped(results: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Several :attr:`ListingCounts.skipped` dicts (listings of disjoint parts of one input) as one: counts
    added, the first :data:`EXAMPLES` paths of the union (sorted), extension counts added."""
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    extensions: Counter[str] = Counter()
    for result in results:
        for reason, group in result.items():
            counts[reason] += group["count"]
            examples.setdefault(reason, []).extend(group["examples"])
            extensions.update(group.get("by_extension", {}))
    out: dict[str, dict[str, Any]] = {}
    for reason in sorted(counts):
        out[reason] = {"count": counts[reason], "examples": sorted(examples[reason])[:EXAMPLES]}
        if reason == "extension":
            out[reason]["by_extension"] = _by_extension(extensions)
    return out


def list_inputs(cfg: InputSource) -> InputListing:
    """List ``cfg.uri`` (see the module docstring); logs what was skipped or merged as one warning each.

    Raises :class:`InputListingError` for a missing input, an input with no image files, a malformed
    manifest (naming the line or row), a blank/null path or a path with two identities."""
    listing = list_all_inputs(cfg)
    kept, listing.beyond_limit = apply_limit(len(listing.table), cfg.limit)
    listing.table = listing.table.head(kept)
    listing.log(cfg)
    return listing


def list_all_inputs(cfg: InputSource) -> InputListing:
    """:func:`list_inputs` without ``input.limit`` and without logging (same errors)."""
    fs, root = open_fs(cfg.uri, cfg.storage_options)
    fs.invalidate_cache()
    skips = _Skips()
    followed: list[str] = []
    duplicates = 0
    missing_like: dict[str, int] = {}
    kind = source_kind(cfg, fs, root)
    if kind == "manifest":
        table, duplicates, missing_like = _from_manifest(cfg, fs, root)
        seen = len(table) + duplicates
    else:
        if kind == "folder":
            found = _walk_local(root, skips, followed) if is_local_fs(fs) else _find_remote(fs, root)
        else:
            found = _glob(fs, root, skips)
        paths = filter_extensions(found, cfg.extensions, skips)
        seen = len(paths) + sum(len(v) for v in skips.paths.values())
        if not paths:
            raise no_images_error(cfg, kind, len(found))
        table = pd.DataFrame({"path": paths, "identity": [None] * len(paths)}, dtype=object)
    if cfg.identity_from_folder:
        names = folder_identities(cfg, table["path"].tolist(), kind)
        table["identity"] = pd.Series(names, index=table.index, dtype=object)  # None stays None, not NaN
    table = table.sort_values("path", kind="mergesort").reset_index(drop=True)
    asked = cfg.identity_from_folder or (kind == "manifest" and bool(cfg.identity_column))
    no_identity = int(table["identity"].isna().sum()) if asked else 0
    return InputListing(
        kind, seen, skips.result(), sorted(followed), duplicates, 0, no_identity, missing_like, table
    )


def input_top(cfg: InputSource, kind: str) -> str | None:
    """The folder at the top of a folder or glob input, as a path of its filesystem: the folder itself, or a
    glob's leading folders without glob characters (``/x/src/*.jpg`` and ``/x/src/**`` -> ``/x/src``); None
    for a manifest (its paths may lie anywhere)."""
    if kind == "manifest":
        return None
    fs, root = open_fs(cfg.uri, cfg.storage_options)
    if kind == "glob":
        parts = root.split("/")
        root = "/".join(parts[: next(i for i, part in enumerate(parts) if has_magic(part))])
    return _normal_folder(fs, root)


def _normal_folder(fs, path: str) -> str:
    return os.path.normpath(path) if is_local_fs(fs) else path.rstrip("/")


def folder_identities(cfg: InputSource, paths: Sequence[str], kind: str) -> list[str | None]:
    """The identities of listed ``paths`` with ``input.identity_from_folder``: the name of the folder holding
    each (:func:`~froq_ray.storage.fs.folder_name`), or None for a file directly in the input's top folder
    (:func:`input_top`: ``--input /x/src`` gives ``/x/src/a.jpg`` no identity, ``/x/src/bob/a.jpg``
    ``bob``); a manifest's paths always get their folder's name. The one place listing paths get identities
    (the driver's :func:`list_all_inputs` and the Ray listing tasks of :mod:`froq_ray.engine.inputs`)."""
    top = input_top(cfg, kind)
    if top is None:
        return [folder_name(p) for p in paths]
    fs, _ = open_fs(cfg.uri, cfg.storage_options)
    local = is_local_fs(fs)

    def parent(path: str) -> str:
        return _normal_folder(fs, posixpath.dirname(local_path(path) if local else fs._strip_protocol(path)))

    return [None if parent(p) == top else folder_name(p) for p in paths]


def list_remote_files(
    fs, root: str, extensions: list[str]
) -> tuple[list[str], dict[str, dict[str, Any]], int]:
    """(image URIs under the remote folder ``root``, sorted; skipped as in :attr:`ListingCounts.skipped`;
    files found) for one remote folder or prefix, listed recursively (``fs.find``) and filtered by extension
    like :func:`list_inputs` does. The folder's cached listing is dropped before and after."""
    fs.invalidate_cache(root)
    found = _find_remote(fs, root)
    fs.invalidate_cache(root)
    paths, skipped = split_by_extension(found, extensions)
    return paths, skipped, len(found)


def split_by_extension(
    found: list[str], extensions: list[str]
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(the paths of ``found`` that end with one of ``extensions``, sorted; the others as
    :attr:`ListingCounts.skipped`)."""
    skips = _Skips()
    paths = sorted(filter_extensions(found, extensions, skips))
    return paths, skips.result()


def filter_extensions(found: list[str], extensions: Sequence[str], skips: _Skips) -> list[str]:
    """The paths of ``found`` that end with one of ``extensions``; the others are counted in ``skips``."""
    paths = []
    for path in found:
        if _keep(path, extensions):
            paths.append(path)
        else:
            skips.add("extension", path)
    return paths


def no_images_error(cfg: InputSource, kind: str, files_found: int) -> InputListingError:
    """The error for a folder or glob that lists no image file among ``files_found`` files."""
    what = (
        f"no image files among {files_found} file(s)"
        if kind == "folder"
        else (f"glob matched no image files ({files_found} file(s) matched)")
    )
    return InputListingError(f"input {cfg.uri}: {what} (extensions: {', '.join(cfg.extensions)})")


def apply_limit(rows: int, limit: int | None) -> tuple[int, int]:
    """(rows kept, rows beyond ``limit``) of a listing of ``rows`` rows (``limit=None``: keep all)."""
    kept = rows if limit is None else min(rows, limit)
    return kept, rows - kept


def input_digest(listing: pd.DataFrame) -> str:
    """sha256 (hex) of the listing rows in order (path and identity): changes when any input changes.
    Text is hashed as UTF-8 (undecodable names as their original bytes), so any path digests stably."""
    return rows_digest(listing["path"], listing["identity"])


def rows_digest(paths, identities) -> str:
    """sha256 (hex) over ``f"{path}\\t{identity or ''}\\n"`` per row, in order, UTF-8 with surrogate escapes
    (see :func:`input_digest`); ``identities`` may hold None or NaN for a missing identity."""
    h = hashlib.sha256()
    for path, identity in zip(paths, identities, strict=True):
        ident = (
            "" if identity is None or (isinstance(identity, float) and pd.isna(identity)) else str(identity)
        )
        h.update(f"{path}\t{ident}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def source_kind(cfg: InputSource, fs, root: str) -> str:
    """``manifest``, ``folder`` or ``glob`` from what exists at ``root`` (see the module docstring).

    Raises :class:`InputListingError` when the input does not exist, is a file that is no manifest, or when
    ``input.identity_column`` is set for a folder or glob (only a manifest has columns: it would be ignored)."""
    kind = _source_kind(cfg, fs, root)
    if kind != "manifest" and cfg.identity_column:
        raise InputListingError(
            f"input {cfg.uri}: input.identity_column={cfg.identity_column!r} names a manifest column, but the input "
            f"is a {kind}; use --set input.identity_from_folder=true for identity folders"
        )
    return kind


def _source_kind(cfg: InputSource, fs, root: str) -> str:
    local = is_local_fs(fs)
    if os.path.isfile(root) if local else fs.isfile(root):
        if root.lower().endswith(MANIFEST_SUFFIXES):
            return "manifest"
        raise InputListingError(
            f"input {cfg.uri}: is a file; expected a directory, an s3:// prefix, a glob or a .parquet/.csv manifest"
        )
    if os.path.isdir(root) if local else fs.isdir(root):
        return "folder"
    if has_magic(root):
        return "glob"
    if root.lower().endswith(MANIFEST_SUFFIXES):
        raise InputListingError(f"input manifest {cfg.uri}: does not exist")
    raise InputListingError(f"input {cfg.uri}: does not exist")


def _keep(path: str, extensions: Sequence[str]) -> bool:
    return path.lower().endswith(tuple(extensions))


def _find_remote(fs, root: str) -> list[str]:
    return [to_uri(fs, p) for p in fs.find(root)]


def _walk_local(root: str, skips: _Skips, followed: list[str]) -> list[str]:
    """Files under a local folder as listing paths, following symlinks; each real folder is read once.

    The tree is read first without entering links, so files keep their own paths; then the links to
    folders, in sorted order, round by round (a followed folder can hold links too)."""
    visited: set[tuple[int, int]] = set()
    files: list[str] = []
    links: list[tuple[str, os.stat_result]] = []

    def read_tree(top: str) -> None:
        stack = [top]
        while stack:
            folder = stack.pop()
            info = os.stat(folder)
            visited.add((info.st_dev, info.st_ino))
            try:
                entries = list(os.scandir(folder))
            except OSError:
                skips.add("unreadable_folder", local_name(folder))
                continue
            for entry in entries:
                if entry.is_symlink():
                    try:
                        target = os.stat(entry.path)
                    except OSError:
                        skips.add("broken_symlink", local_name(entry.path))
                        continue
                    if stat.S_ISDIR(target.st_mode):
                        links.append((entry.path, target))
                    elif stat.S_ISREG(target.st_mode):
                        files.append(local_name(entry.path))
                    else:
                        skips.add("not_a_regular_file", local_name(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    files.append(local_name(entry.path))
                else:
                    skips.add("not_a_regular_file", local_name(entry.path))

    read_tree(root)
    while links:
        batch, links = sorted(links, key=lambda item: item[0]), []
        for path, target in batch:
            if (target.st_dev, target.st_ino) in visited:
                real_parent = os.path.realpath(os.path.dirname(path))
                real_target = os.path.realpath(path)
                loop = real_parent == real_target or real_parent.startswith(real_target.rstrip("/") + "/")
                skips.add("symlink_loop" if loop else "symlink_to_listed_folder", local_name(path))
                continue
            followed.append(local_name(path))
            read_tree(path)
    return files


def _glob(fs, pattern: str, skips: _Skips) -> list[str]:
    """Files matching a glob as listing paths; matched folders and (locally) broken links are skipped."""
    matches = fs.glob(pattern, detail=True)
    files = []
    local = is_local_fs(fs)
    for path, info in sorted(matches.items()):
        if local:
            try:
                mode = os.stat(path).st_mode
            except OSError:
                skips.add("broken_symlink", local_name(path))
                continue
            if stat.S_ISDIR(mode):
                skips.add("folder", local_name(path))
            elif stat.S_ISREG(mode):
                files.append(local_name(path))
            else:
                skips.add("not_a_regular_file", local_name(path))
        elif info.get("type") == "directory":
            skips.add("folder", to_uri(fs, path))
        else:
            files.append(to_uri(fs, path))
    return files


def _from_manifest(cfg: InputSource, fs, path: str) -> tuple[pd.DataFrame, int, dict[str, int]]:
    """(table of unique paths, number of duplicate rows merged, identities that read like a missing value:
    text as written -> rows, most frequent first)."""
    with fs.open(path, "rb") as f:
        raw = f.read()
    rows = _read_parquet(cfg, raw) if path.lower().endswith(".parquet") else _read_csv(cfg, raw)
    if not rows:
        raise InputListingError(f"input manifest {cfg.uri}: has no rows")
    folder = parent_uri(cfg.uri)
    first: dict[str, tuple[str, str | None]] = {}  # resolved path -> (where, identity) of its first row
    duplicates = 0
    for where, record in rows:
        entry = record[cfg.path_column]
        if entry is None:
            raise InputListingError(f"input manifest {cfg.uri}: null {cfg.path_column!r} in {where}")
        if not isinstance(entry, str):
            raise InputListingError(
                f"input manifest {cfg.uri}: {cfg.path_column!r} in {where} is {type(entry).__name__} "
                f"{entry!r}, expected text"
            )
        if not entry.strip():
            what = "empty" if not entry else f"blank ({entry!r})"
            raise InputListingError(f"input manifest {cfg.uri}: {what} {cfg.path_column!r} in {where}")
        resolved = _resolve_entry(entry, folder)
        identity = _identity_text(record[cfg.identity_column]) if cfg.identity_column else None
        if resolved not in first:
            first[resolved] = (where, identity)
            continue
        duplicates += 1
        where_first, identity_first = first[resolved]
        if identity != identity_first:
            raise InputListingError(
                f"input manifest {cfg.uri}: path {resolved} has two identities: {identity_first!r} "
                f"({where_first}) and {identity!r} ({where})"
            )
    identities = [identity for _, identity in first.values()]
    table = pd.DataFrame({"path": list(first), "identity": identities}, dtype=object)
    counted = Counter(i for i in identities if i is not None and missing_like(i))
    return table, duplicates, dict(counted.most_common())


def _read_csv(cfg: InputSource, raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """[(row description, {column: text})]; any malformation names its 1-based line. Trailing line breaks
    at the end of the file are ignored; a blank line elsewhere is a line with 0 fields (an error)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputListingError(
            f"input manifest {cfg.uri}: line {line} is not UTF-8 text ({exc.reason})"
        ) from None
    reader = csv.reader(io.StringIO(text.rstrip("\r\n"), newline=""), strict=True)
    rows: list[tuple[str, dict[str, Any]]] = []
    header: list[str] | None = None
    line = 1
    try:
        for fields in reader:
            if header is None:
                header = fields
                _check_header(cfg, header, "line 1")
            elif len(fields) != len(header):
                raise InputListingError(
                    f"input manifest {cfg.uri}: line {line} has {len(fields)} field(s), the header has "
                    f"{len(header)} (a comma inside a value needs double quotes)"
                )
            else:
                record: dict[str, Any] = dict(zip(header, fields, strict=True))
                if cfg.identity_column and record.get(cfg.identity_column) == "":
                    record[cfg.identity_column] = None  # an empty CSV cell is a missing identity (only that)
                rows.append((f"data row {len(rows) + 1} (line {line})", record))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise InputListingError(f"input manifest {cfg.uri}: line {reader.line_num}: {exc}") from None
    if header is None:
        raise InputListingError(f"input manifest {cfg.uri}: is empty (no header line)")
    return rows


def _read_parquet(cfg: InputSource, raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """[(row description, {column: Python value})]; nulls are None, integers stay integers."""
    try:
        table = pq.read_table(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - any parser failure means the same thing to the user
        raise InputListingError(f"input manifest {cfg.uri}: cannot be read as Parquet: {exc}") from None
    _check_header(cfg, table.column_names, "the schema")
    wanted = [c for c in (cfg.path_column, cfg.identity_column) if c and c in table.column_names]
    values = {c: table.column(c).to_pylist() for c in wanted}
    rows = [(f"data row {i + 1}", {c: values[c][i] for c in wanted}) for i in range(table.num_rows)]
    return rows


def _check_header(cfg: InputSource, columns: list[str], where: str) -> None:
    repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
    if repeated:
        raise InputListingError(f"input manifest {cfg.uri}: column {repeated[0]!r} appears twice in {where}")
    _require_columns(cfg, columns)


def _require_columns(cfg: InputSource, columns: list[str]) -> None:
    for option, column in (("path_column", cfg.path_column), ("identity_column", cfg.identity_column)):
        if column and column not in columns:
            raise InputListingError(
                f"input manifest {cfg.uri}: no column {column!r} (input.{option}); "
                f"columns: {', '.join(map(str, columns))}"
            )


def _identity_text(value: Any) -> str | None:
    """A manifest identity as text: None (a Parquet null, an empty CSV cell) and float NaN -> None; integral
    numbers without ``.0``; text exactly as written, ``''`` and whitespace included (counted by
    :func:`missing_like`, not nulled)."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _resolve_entry(entry: str, manifest_folder: str) -> str:
    """A manifest entry as a full URI: relative entries are taken from the manifest's folder."""
    if is_absolute_uri(entry):
        return entry
    protocol, folder = split_protocol(manifest_folder)
    joined = posixpath.normpath(posixpath.join(folder, entry))
    return f"{protocol}://{joined}" if protocol else joined
