"""The model registry: every family is listed, and misuse (unknown name, no weights, bad files) fails clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from froq_ray.models import ModelLoadError, available_models, load_model
from froq_ray.models.registry import register_model

FAMILIES = {
    "dlib_resnet_v1": "dlib",
    "mobilefacenet": "mobilefacenet",
    "iresnet18": "iresnet",
    "iresnet34": "iresnet",
    "iresnet50": "iresnet",
    "iresnet100": "iresnet",
    "iresnet200": "iresnet",
    "adaface_ir18": "adaface",
    "adaface_ir50": "adaface",
    "adaface_ir101": "adaface",
    "onnx": "onnx",
}
NEEDS_WEIGHTS = sorted(set(FAMILIES) - {"dlib_resnet_v1"})
CHECKPOINT_MODELS = ["mobilefacenet", "iresnet18", "adaface_ir18", "onnx"]


def test_available_models_lists_every_name_with_its_family() -> None:
    entries = available_models()
    assert sorted(entries) == sorted(FAMILIES)
    assert {name: e.family for name, e in entries.items()} == FAMILIES
    assert all(e.name == name and e.description for name, e in entries.items())
    assert [n for n, e in entries.items() if e.needs_weights] == NEEDS_WEIGHTS


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model("vggface", "/nonexistent.pth")
    assert str(info.value) == (
        "unknown model 'vggface'; `froq models` lists them: " + ", ".join(sorted(FAMILIES))
    )


def test_misspelt_model_name_gets_the_closest_name() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model("mobilefacenett")
    assert str(info.value).startswith(
        "unknown model 'mobilefacenett' (did you mean 'mobilefacenet'?); `froq models`"
    )


@pytest.mark.parametrize("name", NEEDS_WEIGHTS)
def test_models_without_built_in_weights_demand_a_path(name: str) -> None:
    for weights in (None, ""):
        with pytest.raises(ModelLoadError, match=rf"model '{name}' has no built-in weights"):
            load_model(name, weights)


@pytest.mark.parametrize("name", CHECKPOINT_MODELS)
def test_missing_weights_file(name: str, tmp_path: Path) -> None:
    absent = tmp_path / "absent.bin"
    with pytest.raises(ModelLoadError, match=rf"not found: {absent}"):
        load_model(name, str(absent))


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18", "adaface_ir18"])
def test_corrupt_checkpoint(name: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage, not a torch checkpoint")
    with pytest.raises(ModelLoadError, match=rf"cannot read checkpoint {junk}"):
        load_model(name, str(junk))


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet50", "adaface_ir101"])
def test_unknown_options_are_rejected(name: str, mobilefacenet_pt: Path) -> None:
    with pytest.raises(ModelLoadError, match="option"):
        load_model(name, str(mobilefacenet_pt), {"fp16": True})


def test_a_name_cannot_be_registered_twice() -> None:
    available_models()  # make sure the families are registered
    with pytest.raises(ValueError, match="registered twice"):
        register_model("mobilefacenet", "mobilefacenet", True, "duplicate")(lambda _weights, _options: None)
