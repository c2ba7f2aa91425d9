"""The run manifest ``_froq/manifest.json``: resolved config, versions, weights sha256, input digest, counts by
status, throughput. Written by the driver when a run finishes; any ``storage_options`` mapping inside it is
redacted again before writing, so credentials cannot leak through it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fs import join_uri, open_fs, read_json, redact, write_json_atomic
from .shards import STATE_DIR

MANIFEST_FILE = f"{STATE_DIR}/manifest.json"
"""The manifest, relative to the output folder."""
LEGACY_MANIFEST_FILE = "_manifest.json"
"""Where versions before the ``_froq/`` layout wrote it (beside the parts)."""


def write_manifest(
    out_uri: str, storage_options: Mapping[str, Any] | None, manifest: Mapping[str, Any]
) -> str:
    """Write ``manifest`` as ``<out_uri>/_froq/manifest.json`` (atomically on local disks); returns its URI."""
    uri = join_uri(out_uri, MANIFEST_FILE)
    fs, path = open_fs(uri, storage_options)
    write_json_atomic(fs, path, redact_storage_options(manifest))
    return uri


def read_manifest(out_uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``_froq/manifest.json`` of an output; ``FileNotFoundError`` naming it when there is none."""
    uri = join_uri(out_uri, MANIFEST_FILE)
    fs, path = open_fs(uri, storage_options)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        raise FileNotFoundError(f"no run manifest at {uri}")
    return read_json(fs, path)


def redact_storage_options(node: Any) -> Any:
    """A copy of ``node`` (nested mappings / lists) with every ``storage_options`` mapping redacted."""
    if isinstance(node, Mapping):
        return {
            k: redact(v) if k == "storage_options" and isinstance(v, Mapping) else redact_storage_options(v)
            for k, v in node.items()
        }
    if isinstance(node, (list, tuple)):
        return [redact_storage_options(v) for v in node]
    return node
