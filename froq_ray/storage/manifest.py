"""The run manifest ``_froq/manifest.json``, the same header for every job plus the job's own ``results``.

Header (:data:`HEADER_KEYS`, every job): ``job``; ``started_at`` / ``finished_at`` (UTC, ISO 8601 with ``Z``);
``config`` (the resolved config, credentials redacted); ``config_digest`` (sha256 hex of the settings that
change results, :func:`froq_ray.config.config_digest`); ``versions``
(:func:`froq_ray.versions.software_versions`); ``counts_by_status`` (rows by status over the whole output or
input: ``{status: count}``); ``stage_seconds`` (wall or worker seconds by stage of this run). Then
``results``: what the job computed (annotate: model, input, shards, this run; evaluate: the EDC table...).

Written by the driver when a run finishes, through :func:`write_manifest` (the one writer); any
``storage_options`` mapping inside it is redacted again before writing, so credentials cannot leak through it.
The file is strict JSON: a non-finite number (``inf``, ``nan``) anywhere in it is an error naming its key
(:class:`NonFiniteManifestValueError`), never written as ``Infinity`` / ``NaN``.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..versions import software_versions
from .fs import join_uri, open_fs, read_json, redact, write_json_atomic
from .location import Location
from .shards import STATE_DIR

MANIFEST_FILE = f"{STATE_DIR}/manifest.json"
"""The manifest, relative to the output folder."""
LEGACY_MANIFEST_FILE = "_manifest.json"
"""Where versions before the ``_froq/`` layout wrote it (beside the parts)."""


HEADER_KEYS = (
    "job",
    "started_at",
    "finished_at",
    "config",
    "config_digest",
    "versions",
    "counts_by_status",
    "stage_seconds",
)
"""The keys every job's manifest starts with (module doc); the job's own part follows under ``results``."""


def status_counts(statuses: Iterable[Any]) -> dict[str, int]:
    """``{status: rows}`` of a column of row statuses, sorted by status (the header's ``counts_by_status``)."""
    return dict(sorted(Counter(str(s) for s in statuses).items()))


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class RunManifest:
    """One run's manifest: the common header (module doc) and the job's ``results``.

    ``config``: the resolved config (:func:`froq_ray.config.resolved_dict`; storage options are redacted again
    when written); ``counts_by_status``: ``{status: rows}``; ``stage_seconds``: ``{stage: seconds}``;
    ``finished_at``: set by :meth:`to_dict` when not given."""

    job: str
    started_at: str
    config: Mapping[str, Any]
    config_digest: str
    counts_by_status: Mapping[str, int] = field(default_factory=dict)
    stage_seconds: Mapping[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    finished_at: str | None = None
    versions: Mapping[str, str] = field(default_factory=software_versions)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able manifest: the keys of :data:`HEADER_KEYS`, then ``results`` (the file sorts keys)."""
        return {
            "job": self.job,
            "started_at": self.started_at,
            "finished_at": self.finished_at or utc_now(),
            "config": redact_storage_options(self.config),
            "config_digest": self.config_digest,
            "versions": dict(self.versions),
            "counts_by_status": {k: int(v) for k, v in self.counts_by_status.items()},
            "stage_seconds": {k: round(float(v), 3) for k, v in self.stage_seconds.items()},
            "results": self.results,
        }


class NonFiniteManifestValueError(ValueError):
    """A run manifest holds ``inf`` or ``nan`` (not strict JSON): a bug of the job that built it, so not a
    :class:`~froq_ray.errors.UserError`. The message names every such key (``results.this_run.seconds``)."""


def non_finite_keys(node: Any, key: str = "") -> list[str]:
    """The dotted keys (list items as ``[i]``) of the non-finite real numbers (``inf``, ``-inf``, ``nan``: Python
    or NumPy floats) in ``node``, a JSON-like tree of mappings, lists and tuples; ``[]`` when there is none."""
    if isinstance(node, Mapping):
        return [
            k for name, v in node.items() for k in non_finite_keys(v, f"{key}.{name}" if key else str(name))
        ]
    if isinstance(node, (list, tuple)):
        return [k for i, v in enumerate(node) for k in non_finite_keys(v, f"{key}[{i}]")]
    if isinstance(node, numbers.Real) and not isinstance(node, numbers.Integral) and not math.isfinite(node):
        return [key or "<manifest>"]
    return []


def write_manifest(output: Location, manifest: RunManifest) -> dict:
    """Write ``manifest`` as ``<output>/_froq/manifest.json`` (atomically on local disks); returns what was
    written (:meth:`RunManifest.to_dict`). Raises ``TypeError`` for anything but a :class:`RunManifest` and
    :class:`NonFiniteManifestValueError` (nothing written) when a number in it is ``inf`` or ``nan``."""
    if not isinstance(manifest, RunManifest):
        raise TypeError(f"write_manifest takes a RunManifest, got {type(manifest).__name__}")
    data = manifest.to_dict()
    bad = non_finite_keys(data)
    if bad:
        raise NonFiniteManifestValueError(
            f"the run manifest would hold a non-finite number (inf or nan; not strict JSON) at {', '.join(bad)}"
        )
    write_json_atomic(output.fs, f"{output.path.rstrip('/')}/{MANIFEST_FILE}", data)
    return data


def read_manifest(output: Location | str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``_froq/manifest.json`` of an output (a :class:`~froq_ray.storage.location.Location`, or a URI and
    its storage options); ``FileNotFoundError`` naming it when there is none."""
    if isinstance(output, Location):
        base, storage_options = output.uri, output.storage_options
    else:
        base = output
    uri = join_uri(base, MANIFEST_FILE)
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
