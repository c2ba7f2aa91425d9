"""The run manifest ``_manifest.json``: resolved config, versions, weights sha256, input digest, counts by
status, throughput. Written by the driver when a run finishes; any ``storage_options`` mapping inside it is
redacted again before writing, so credentials cannot leak through it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fs import join_uri, open_fs, read_json, redact, write_json_atomic

MANIFEST_FILE = "_manifest.json"


def write_manifest(
    out_uri: str, storage_options: Mapping[str, Any] | None, manifest: Mapping[str, Any]
) -> str:
    """Write ``manifest`` as ``<out_uri>/_manifest.json`` (atomically on local disks); returns its URI."""
    uri = join_uri(out_uri, MANIFEST_FILE)
    fs, path = open_fs(uri, storage_options)
    write_json_atomic(fs, path, _redact_storage_options(manifest))
    return uri


def read_manifest(out_uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``_manifest.json`` of an output; ``FileNotFoundError`` naming it when there is none."""
    uri = join_uri(out_uri, MANIFEST_FILE)
    fs, path = open_fs(uri, storage_options)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        raise FileNotFoundError(f"no run manifest at {uri}")
    return read_json(fs, path)


def _redact_storage_options(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {
            k: redact(v) if k == "storage_options" and isinstance(v, Mapping) else _redact_storage_options(v)
            for k, v in node.items()
        }
    if isinstance(node, (list, tuple)):
        return [_redact_storage_options(v) for v in node]
    return node
