"""froq_ray: face-image quality (FROQ) annotation at scale on Ray.

The public Python API, imported on first use so that ``import froq_ray`` stays light (no torch, no Ray):

- :class:`froq_ray.Scorer` (:mod:`froq_ray.api`): score paths, encoded images or uint8 arrays in this process,
  no Ray; ``Scorer.load(...).score(images) -> pandas.DataFrame`` with the annotate job's columns.
- :func:`froq_ray.ray_stage` (:mod:`froq_ray.user_stage`): the same scoring as a stage for your own
  ``ds.map_batches(**froq_ray.ray_stage(...))``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Scorer", "ScorerSettings", "ray_stage", "RayStage", "__version__"]

_LAZY = {
    "Scorer": "froq_ray.api",
    "ScorerSettings": "froq_ray.api",
    "ray_stage": "froq_ray.user_stage",
    "RayStage": "froq_ray.user_stage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'froq_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
