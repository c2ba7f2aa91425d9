"""One registry of face-recognition models: name -> factory(weights, options) -> LoadedModel."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import LoadedModel, ModelLoadError

Factory = Callable[[Any, dict[str, Any]], LoadedModel]
"""``factory(weights, options)``: ``weights`` is a path (``str``) for a model registered with ``needs_weights``
(:func:`load_model` refuses a missing one before calling), ``str | None`` otherwise."""


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    family: str
    factory: Factory
    needs_weights: bool
    description: str
    weights_hint: str = ""
    """What the weights path must point at (e.g. "an arcface_torch backbone.pth"), named in the error."""


_REGISTRY: dict[str, RegistryEntry] = {}


def register_model(
    name: str, family: str, needs_weights: bool, description: str, *, weights_hint: str = ""
) -> Callable[[Factory], Factory]:
    """Register ``factory`` under ``name``. A factory of a model with ``needs_weights`` is only called with a
    weights path (:func:`load_model` refuses a missing one, naming ``weights_hint``)."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = RegistryEntry(name, family, factory, needs_weights, description, weights_hint)
        return factory

    return deco


def _ensure_families_imported() -> None:
    # Importing the family modules fills the registry.
    from . import families  # noqa: F401 - importing it registers every family


def available_models() -> dict[str, RegistryEntry]:
    _ensure_families_imported()
    return dict(sorted(_REGISTRY.items()))


def registry_entry(name: str) -> RegistryEntry:
    """The registry entry of model ``name``; :class:`ModelLoadError` for an unknown name, one line:
    ``unknown model 'mobilefacenett' (did you mean 'mobilefacenet'?); `froq models` lists them``."""
    entries = available_models()
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ModelLoadError(f"unknown model {name!r}{hint}; `froq models` lists them: {', '.join(entries)}")


def load_model(name: str, weights: str | None = None, options: dict[str, Any] | None = None) -> LoadedModel:
    """Build model ``name``, load ``weights`` (or its built-in weights) on the CPU, frozen, in eval mode.

    Raises :class:`ModelLoadError` for an unknown name (with the closest registered name, if any) or a model
    that needs a weights path and got none; the family factory raises it for weights that do not fit.
    """
    entry = registry_entry(name)
    if entry.needs_weights and not weights:
        hint = f" ({entry.weights_hint})" if entry.weights_hint else ""
        raise ModelLoadError(f"model {name!r} has no built-in weights: set the weights path{hint}")
    return entry.factory(weights, dict(options or {}))
