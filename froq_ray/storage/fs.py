"""fsspec helpers shared by listing, reading and writing: one way to open local paths and ``s3://`` URIs.

URIs: local paths are plain absolute paths (``/data/x.jpg``); remote objects keep their scheme
(``s3://bucket/key``). Storage options are the s3fs keyword arguments (``key``, ``secret``, ``token``,
``endpoint_url``, ``client_kwargs``...). When no endpoint is given, the standard AWS environment variables
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` supply one. Credentials are never logged or written: anything
that leaves the process goes through :func:`redact`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit, urlunsplit

import fsspec
from fsspec.core import split_protocol, url_to_fs

from ..errors import UserError

LOCAL_PROTOCOLS = ("file", "local")
_SECRET_KEY = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)
REDACTED = "***"


def redact(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``options`` with every value whose key looks secret (key/secret/token/password/credential)
    replaced by ``"***"``; nested mappings (``client_kwargs``, ``config_kwargs``) are redacted too."""
    out: dict[str, Any] = {}
    for name, value in (options or {}).items():
        if _SECRET_KEY.search(str(name)):
            out[name] = REDACTED
        elif isinstance(value, Mapping):
            out[name] = redact(value)
        else:
            out[name] = value
    return out


def protocol_of(uri: str) -> str:
    """``"s3"`` for ``s3://...``, ``"file"`` for local paths and ``file://`` URIs."""
    protocol, _ = split_protocol(uri)
    return protocol or "file"


def is_remote(uri: str) -> bool:
    return protocol_of(uri) not in LOCAL_PROTOCOLS


def with_env_endpoint(protocol: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` plus ``endpoint_url`` from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` for S3 when the
    options name no endpoint themselves (neither top-level nor in ``client_kwargs``)."""
    out = dict(options or {})
    if protocol not in ("s3", "s3a"):
        return out
    if out.get("endpoint_url") or (out.get("client_kwargs") or {}).get("endpoint_url"):
        return out
    env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if env:
        out["endpoint_url"] = env
    return out


def open_fs(
    uri: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for ``uri``; storage options apply to remote filesystems only."""
    protocol = protocol_of(uri)
    if protocol in LOCAL_PROTOCOLS:
        return url_to_fs(uri)
    return url_to_fs(uri, **with_env_endpoint(protocol, storage_options))


def filesystem(protocol: str, storage_options: Mapping[str, Any] | None = None) -> fsspec.AbstractFileSystem:
    """The filesystem for a protocol (``"file"``, ``"s3"``...), configured like :func:`open_fs` does."""
    if protocol in LOCAL_PROTOCOLS:
        return fsspec.filesystem("file")
    return fsspec.filesystem(protocol, **with_env_endpoint(protocol, storage_options))


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in LOCAL_PROTOCOLS for p in protocols)


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Full URI of an fs path: the plain path for local files, ``scheme://...`` for remote objects."""
    return path if is_local_fs(fs) else fs.unstrip_protocol(path)


FILE_URI_PREFIX = "file://"


def local_name(path: str) -> str:
    r"""A local path as listing text (the ``path`` of a row): the path itself when its name is valid UTF-8;
    otherwise (Linux names may be any bytes; Python hands undecodable bytes over as surrogate escapes) an
    RFC 8089 ``file://`` URI of the name's bytes, every byte outside ``A-Z a-z 0-9 / _ . - ~`` percent-encoded:
    ``/data/bad\udcff.jpg`` (bytes ``bad\xff.jpg``) -> ``file:///data/bad%FF.jpg``. The text is valid UTF-8,
    as Parquet string columns require; :func:`local_path` turns it back into the real name."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return FILE_URI_PREFIX + quote(os.fsencode(path), safe="/")


def local_path(uri: str) -> str:
    """The real local path of a listing path: ``file://`` URIs are percent-decoded to the name's bytes
    (``os.fsdecode``, so undecodable bytes become surrogate escapes that ``open`` turns back into the same
    bytes); a plain path is returned unchanged (a ``%`` in it is a literal ``%``)."""
    if uri.startswith(FILE_URI_PREFIX):
        return os.fsdecode(unquote_to_bytes(uri[len(FILE_URI_PREFIX) :]))
    return uri


def folder_name(path: str) -> str:
    r"""Name of the folder holding a listing path (``/a/bob/1.jpg`` -> ``bob``). For a ``file://`` rendering
    (see :func:`local_name`) the name's percent-escapes are decoded, bytes that are not UTF-8 shown as
    ``\xNN`` (``file:///a/b%FF/1.jpg`` -> ``b\xff``); any other path's name is returned as written."""
    name = posixpath.basename(posixpath.dirname(path))
    return unquote(name, errors="backslashreplace") if path.startswith(FILE_URI_PREFIX) else name


def join_uri(base: str, *parts: str) -> str:
    """Join path segments onto a local path or a URI with ``/`` (``s3://b/p`` + ``x`` -> ``s3://b/p/x``)."""
    out = base.rstrip("/") if base not in ("/", "") else base
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}" if out not in ("", "/") else f"{out}{part}"
    return out


def parent_uri(uri: str) -> str:
    """The folder holding ``uri`` (keeps the scheme): ``s3://b/p/x.csv`` -> ``s3://b/p``."""
    protocol, path = split_protocol(uri)
    parent = posixpath.dirname(path.rstrip("/"))
    return f"{protocol}://{parent}" if protocol else parent


def is_absolute_uri(value: str) -> bool:
    """True for URIs with a scheme and absolute local paths (a manifest's relative entries are neither)."""
    return split_protocol(value)[0] is not None or os.path.isabs(value)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``path`` so readers never see a partial object.

    Local: create the folder, write a temp file beside it, then rename (atomic on one filesystem). Object
    stores publish an object only when its upload completes, so the object is written directly.
    """
    if not is_local_fs(fs):
        fs.pipe_file(path, data)
        return
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = temp_name(path)
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm_file(tmp)


TEMP_MARK = ".tmp-"


def temp_name(path: str) -> str:
    """A unique hidden sibling temp name, ``<dir>/.<name>.tmp-<32 hex>``: the leading dot keeps it out of
    ``pandas.read_parquet(<dir>)`` (pyarrow skips names starting with ``.`` or ``_``)."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}{TEMP_MARK}{uuid.uuid4().hex}")


def write_json_atomic(fs: fsspec.AbstractFileSystem, path: str, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON with :func:`write_bytes_atomic`."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(fs, path, text.encode())


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    with fs.open(path, "rb") as f:
        return json.loads(f.read().decode())


# ------------------------------------------------------------------------------------------- S3 preflight

PREFLIGHT_CONFIG_KWARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"max_attempts": 1},
}
"""botocore ``Config`` settings of the reachability check only: one attempt, a short connect timeout."""
_S3_PROTOCOLS = ("s3", "s3a")


class StorageUnreachableError(UserError, ConnectionError):
    """A remote location could not be reached (no answer, refused connection, no credentials); the message
    names the URI and the endpoint, never credentials."""


def endpoint_of(uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The endpoint a remote ``uri`` is reached at, as a URL without user info (``endpoint_url`` of the options,
    of their ``client_kwargs`` or of the AWS environment), or ``"the default AWS endpoint"``."""
    options = with_env_endpoint(protocol_of(uri), storage_options)
    url = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
    if not url:
        return "the default AWS endpoint"
    parts = urlsplit(str(url))
    if parts.username or parts.password:  # never echo credentials embedded in the URL
        parts = parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def check_reachable(uri: str, storage_options: Mapping[str, Any] | None = None, access: str = "read") -> None:
    """Fail fast when the storage behind a remote ``uri`` cannot be reached; local paths pass unchecked.

    One metadata request (``info``) with a 5 s connect timeout, a 10 s read timeout and no retries, on a private
    filesystem instance (the cached one the job uses keeps its own retry settings). A missing object or prefix
    is not an error here (the caller reports it); an access refusal is one when ``access="read"`` (the job must
    list and read that location), not for ``access="write"`` (the write probe of
    :func:`froq_ray.storage.run_state.check_writable` decides). Raises :class:`StorageUnreachableError` naming
    the URI, the endpoint and the cause on one line.
    """
    protocol = protocol_of(uri)
    if protocol in LOCAL_PROTOCOLS:
        return
    if access not in ("read", "write"):
        raise ValueError(f"access must be 'read' or 'write', got {access!r}")
    options = with_env_endpoint(protocol, storage_options)
    if protocol in _S3_PROTOCOLS:
        config_kwargs = {**(options.get("config_kwargs") or {}), **PREFLIGHT_CONFIG_KWARGS}
        options = {**options, "config_kwargs": config_kwargs, "skip_instance_cache": True}
    where = f"{uri} at {endpoint_of(uri, storage_options)}"
    try:
        fs, path = url_to_fs(uri, **options)
        if hasattr(fs, "retries"):
            fs.retries = 1  # s3fs retries connection errors itself, with backoff, on top of botocore
        fs.info(path)
    except FileNotFoundError:
        return
    except PermissionError as exc:
        if access == "write":
            return
        raise StorageUnreachableError(
            f"access denied to {where}: {_one_line(exc)}; check the credentials"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever the client raises, the location cannot be used
        kind = type(exc).__name__
        if kind == "NoCredentialsError":
            raise StorageUnreachableError(
                f"no credentials for {where}: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or an "
                "instance role"
            ) from None
        raise StorageUnreachableError(f"cannot reach {where}: {kind}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")
