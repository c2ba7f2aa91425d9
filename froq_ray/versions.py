"""The software versions every record of this tool names (run manifests, calibration artifacts, student cards).

A leaf module (no Ray, no torch import): package versions come from the installed distributions' metadata."""

from __future__ import annotations

import platform
from importlib import metadata

from . import __version__

PACKAGES = ("torch", "ray", "numpy", "pyarrow", "pandas")
"""The third-party packages whose versions are recorded, besides froq_ray and Python."""


def software_versions() -> dict[str, str]:
    """``{"froq_ray", "python", "torch", "ray", "numpy", "pyarrow", "pandas"}`` -> version text; a package
    that is not installed reads ``"not installed"``."""
    versions = {"froq_ray": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
