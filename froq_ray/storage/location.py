"""A place to read or write: a URI with the storage options that open it (datatrove's ``DataFolder`` idea).

The jobs' output and the one-place storage functions (:func:`froq_ray.storage.output.open_output`,
:func:`froq_ray.storage.manifest.write_manifest`) take a :class:`Location` instead of a ``(uri,
storage_options)`` pair passed separately; the filesystem is opened once, on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fsspec

from .fs import join_uri, open_fs, to_uri


@dataclass(frozen=True)
class Location:
    """``uri`` (a local path or ``scheme://...``) and its ``storage_options`` (used for remote filesystems
    only, see :func:`froq_ray.storage.fs.open_fs`)."""

    uri: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, section: Any) -> Location:
        """The location of a config section with ``uri`` and ``storage_options`` (e.g. ``output``)."""
        return cls(section.uri, dict(section.storage_options))

    @cached_property
    def _opened(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return open_fs(self.uri, self.storage_options)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The filesystem of :attr:`uri` (opened once)."""
        return self._opened[0]

    @property
    def path(self) -> str:
        """:attr:`uri` inside :attr:`fs`."""
        return self._opened[1]

    def join(self, *parts: str) -> Location:
        """The location of ``parts`` below this one, with the same storage options."""
        return Location(join_uri(self.uri, *parts), self.storage_options)

    def uri_of(self, path: str) -> str:
        """The URI of a path of :attr:`fs` (a listing entry), as :func:`froq_ray.storage.fs.to_uri`."""
        return to_uri(self.fs, path)
