"""Face-recognition model zoo."""

from .base import InputContract, LoadedModel, ModelLoadError
from .registry import available_models, load_model

__all__ = ["InputContract", "LoadedModel", "ModelLoadError", "available_models", "load_model"]
