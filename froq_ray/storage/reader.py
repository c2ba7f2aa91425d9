"""Read many objects' bytes at once, never raising for one bad object.

Paths are grouped by protocol; each group is read with ``fs.cat_ranges(..., on_error="return")``, which
fetches remote objects concurrently (s3fs) and returns each object's bytes or its exception in order. The
filesystem is built once per (process, protocol, storage options) and reused across batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import fsspec

from .fs import filesystem, is_local_fs, local_path, protocol_of


def read_blobs(
    paths: list[str], storage_options: Mapping[str, Any] | None = None
) -> tuple[list[bytes | None], list[str | None]]:
    """(blobs, errors), aligned with ``paths``: bytes and None, or None and a one-line error message
    (the row's status is then ``read_error``). A zero-byte object reads as ``b""``, not as an error."""
    blobs: list[bytes | None] = [None] * len(paths)
    errors: list[str | None] = [None] * len(paths)
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        groups.setdefault(protocol_of(path), []).append(i)
    for protocol, indices in groups.items():
        try:
            fs = _cached_fs(protocol, storage_options)
            results = fs.cat_ranges([_fs_path(fs, paths[i]) for i in indices], None, None, on_error="return")
        except Exception as exc:  # noqa: BLE001 - e.g. a bad endpoint fails the whole group the same way
            results = [exc] * len(indices)
        for i, result in zip(indices, results, strict=True):
            if isinstance(result, BaseException):
                errors[i] = _message(paths[i], result)
            else:
                blobs[i] = bytes(result)
    return blobs, errors


_FS_CACHE: dict[tuple[int, str, str], fsspec.AbstractFileSystem] = {}


def _cached_fs(protocol: str, storage_options: Mapping[str, Any] | None) -> fsspec.AbstractFileSystem:
    """One filesystem per (process, protocol, options); the pid in the key keeps a forked child from
    reusing its parent's connections."""
    key = (os.getpid(), protocol, json.dumps(dict(storage_options or {}), sort_keys=True, default=repr))
    if key not in _FS_CACHE:
        _FS_CACHE[key] = filesystem(protocol, storage_options)
    return _FS_CACHE[key]


def _fs_path(fs: fsspec.AbstractFileSystem, uri: str) -> str:
    """The path to open: locally the real name (a ``file://`` listing path is percent-decoded, see
    :func:`froq_ray.storage.fs.local_name`), otherwise the path inside the filesystem."""
    return local_path(uri) if is_local_fs(fs) else fs._strip_protocol(uri)


def _message(path: str, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"{path}: not found"
    return f"{path}: {name}: {text}" if text else f"{path}: {name}"
