"""List a job's inputs: one deterministic, path-sorted table of (path, identity) whatever the source.

Sources, decided from ``input.uri``:
- a ``.parquet`` / ``.csv`` file: a manifest with a path column (and optional identity column); relative
  paths in it resolve against the manifest's folder; it is not filtered by extension;
- a URI with glob characters (``*``, ``?``, ``[``): matching files, filtered by extension;
- otherwise a local directory or an ``s3://`` prefix, listed recursively, filtered by extension
  (case-insensitive).
Paths are full URIs (plain absolute paths for local files, ``s3://bucket/key`` for objects). Duplicate paths
(possible in manifests) are kept once: the path is the row's key.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re

import pandas as pd
from fsspec.core import split_protocol

from ..config import InputConfig
from ..errors import UserError
from .fs import is_absolute_uri, open_fs, parent_uri, to_uri

MANIFEST_SUFFIXES = (".parquet", ".csv")
_GLOB_CHARS = re.compile(r"[*?\[]")


def has_magic(uri: str) -> bool:
    """True when ``uri`` holds glob characters (``*``, ``?``, ``[``)."""
    return bool(_GLOB_CHARS.search(uri))


class InputListingError(UserError, ValueError):
    """The inputs cannot be listed (missing, empty, malformed manifest); the message names the URI."""


def list_inputs(cfg: InputConfig) -> pd.DataFrame:
    """DataFrame with columns ``path`` (str) and ``identity`` (str or None), sorted by path, ``limit`` applied."""
    uri = cfg.uri
    if _is_manifest(uri):
        listing = _from_manifest(cfg)
    else:
        paths = _from_glob(cfg) if has_magic(uri) else _from_folder(cfg)
        listing = pd.DataFrame({"path": paths, "identity": [None] * len(paths)}, dtype=object)
    if cfg.identity_from_folder:
        listing["identity"] = [posixpath.basename(posixpath.dirname(p)) for p in listing["path"]]
    listing = listing.sort_values("path", kind="mergesort").drop_duplicates("path", keep="first")
    if cfg.limit is not None:
        listing = listing.head(cfg.limit)
    return listing.reset_index(drop=True)


def input_digest(listing: pd.DataFrame) -> str:
    """sha256 (hex) of the listing rows in order (path and identity): changes when any input changes."""
    h = hashlib.sha256()
    for path, identity in zip(listing["path"], listing["identity"]):
        ident = (
            "" if identity is None or (isinstance(identity, float) and pd.isna(identity)) else str(identity)
        )
        h.update(f"{path}\t{ident}\n".encode())
    return h.hexdigest()


def _is_manifest(uri: str) -> bool:
    return not has_magic(uri) and uri.lower().endswith(MANIFEST_SUFFIXES)


def _keep(path: str, extensions: list[str]) -> bool:
    return path.lower().endswith(tuple(extensions))


def _no_files_error(cfg: InputConfig, what: str) -> InputListingError:
    return InputListingError(f"input {cfg.uri}: {what} (extensions: {', '.join(cfg.extensions)})")


def _from_folder(cfg: InputConfig) -> list[str]:
    fs, root = open_fs(cfg.uri, cfg.storage_options)
    fs.invalidate_cache()
    if fs.isfile(root):
        raise InputListingError(
            f"input {cfg.uri}: is a file; expected a directory, an s3:// prefix, a glob or a .parquet/.csv manifest"
        )
    found = fs.find(root)
    if not found and not fs.exists(root):
        raise InputListingError(f"input {cfg.uri}: does not exist")
    paths = [to_uri(fs, p) for p in found if _keep(p, cfg.extensions)]
    if not paths:
        raise _no_files_error(cfg, f"no image files among {len(found)} file(s)")
    return paths


def _from_glob(cfg: InputConfig) -> list[str]:
    fs, pattern = open_fs(cfg.uri, cfg.storage_options)
    fs.invalidate_cache()
    matches = fs.glob(pattern, detail=True)
    files = [p for p, info in matches.items() if info.get("type") != "directory"]
    paths = [to_uri(fs, p) for p in files if _keep(p, cfg.extensions)]
    if not paths:
        raise _no_files_error(cfg, f"glob matched no image files ({len(files)} file(s) matched)")
    return paths


def _from_manifest(cfg: InputConfig) -> pd.DataFrame:
    fs, path = open_fs(cfg.uri, cfg.storage_options)
    if not fs.exists(path):
        raise InputListingError(f"input manifest {cfg.uri}: does not exist")
    with fs.open(path, "rb") as f:
        raw = f.read()
    try:
        if path.lower().endswith(".parquet"):
            table = pd.read_parquet(io.BytesIO(raw))
        else:
            table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure means the same thing to the user
        raise InputListingError(f"input manifest {cfg.uri}: cannot be read: {exc}") from None
    _require_columns(cfg, table)
    folder = parent_uri(cfg.uri)
    paths = [_resolve_entry(str(p).strip(), folder) for p in table[cfg.path_column]]
    empty = [i for i, p in enumerate(paths) if not p]
    if empty:
        raise InputListingError(f"input manifest {cfg.uri}: empty {cfg.path_column!r} in row {empty[0]}")
    if cfg.identity_column:
        identities = [None if pd.isna(v) or str(v) == "" else str(v) for v in table[cfg.identity_column]]
    else:
        identities = [None] * len(paths)
    if not paths:
        raise InputListingError(f"input manifest {cfg.uri}: has no rows")
    return pd.DataFrame({"path": paths, "identity": identities}, dtype=object)


def _require_columns(cfg: InputConfig, table: pd.DataFrame) -> None:
    for option, column in (("path_column", cfg.path_column), ("identity_column", cfg.identity_column)):
        if column and column not in table.columns:
            raise InputListingError(
                f"input manifest {cfg.uri}: no column {column!r} (input.{option}); "
                f"columns: {', '.join(map(str, table.columns))}"
            )


def _resolve_entry(entry: str, manifest_folder: str) -> str:
    """A manifest entry as a full URI: relative entries are taken from the manifest's folder."""
    if not entry or is_absolute_uri(entry):
        return entry
    protocol, folder = split_protocol(manifest_folder)
    joined = posixpath.normpath(posixpath.join(folder, entry))
    return f"{protocol}://{joined}" if protocol else joined
