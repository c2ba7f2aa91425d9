"""The config and the method core agree on every shared vocabulary and limit (issue 17, item 4).

For each setting: every value the config allows builds the core object (with the same values), and every
value the core refuses is refused by the config with the dotted key named. The allowed values are listed
here by hand (not read from either side), so a change on one side only fails here.
"""

from __future__ import annotations

import pytest
import torch

from froq_ray.config import ConfigError, ScoringConfig, config_from_dict
from froq_ray.engine.stages import ScoringStageConfig
from froq_ray.models.inference import DeviceUnavailableError, autocast_dtype, resolve_device
from froq_ray.quality.perturbations import PerturbationSettings
from froq_ray.quality.scorer import resolve_graph, resolve_memory_format
from froq_ray.vocabulary import DEVICES, GRAPHS, MEMORY_FORMATS, PRECISIONS


def annotate(**scoring) -> dict:
    return {"job": "annotate", "input": {"uri": "/in"}, "output": {"uri": "/out"}, "scoring": scoring}


def distill(**sections) -> dict:
    return {"job": "distill", "distill": {"annotations": "/ann"}, "output": {"uri": "/out"}, **sections}


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value.problems


def core_refuses(build) -> bool:
    try:
        build()
    except ValueError:
        return True
    return False


# ----------------------------------------------------------------------------------------------- vocabularies
def test_the_vocabularies_are_the_documented_names():
    assert PRECISIONS == ("fp32", "bf16", "fp16")
    assert DEVICES == ("auto", "cpu", "cuda")
    assert MEMORY_FORMATS == ("auto", "contiguous", "channels_last")
    assert GRAPHS == ("auto", "frozen", "eager")


EXPECTED_DTYPE = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "fp64", "FP32", "half", ""])
def test_precision_config_and_core_agree(precision):
    allowed = precision in EXPECTED_DTYPE
    for where, data in [
        ("scoring.precision", annotate(precision=precision)),
        ("self_training.precision", distill(self_training={"precision": precision})),
        ("filter.classifiability.precision", None),
    ]:
        if data is None:
            data = {
                "job": "filter",
                "filter": {"annotations": "/a", "classifiability": {"precision": precision}},
                "output": {"uri": "/out"},
            }
        if allowed:
            config_from_dict(data)
        else:
            assert problems_of(data)[0].startswith(f"{where}: must be one of"), where
    if allowed:
        assert autocast_dtype(precision) == EXPECTED_DTYPE[precision]
    else:
        assert core_refuses(lambda: autocast_dtype(precision))


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "gpu", "CPU"])
def test_device_config_and_core_agree(device):
    data = annotate()
    data["resources"] = {"device": device, "num_gpus_per_actor": 1}
    if device in ("auto", "cpu", "cuda"):
        assert config_from_dict(data).resources.device == device
        if device == "cuda" and not torch.cuda.is_available():
            with pytest.raises(DeviceUnavailableError, match="resources.device is 'cuda'"):
                resolve_device(device, "resources.device")
        else:
            assert resolve_device(device) in ("cpu", "cuda")
    else:
        assert problems_of(data)[0].startswith("resources.device: must be one of")


@pytest.mark.parametrize("memory_format", ["auto", "contiguous", "channels_last", "nhwc", "channels_first"])
def test_memory_format_config_and_core_agree(memory_format):
    data = annotate(memory_format=memory_format)
    if memory_format in ("auto", "contiguous", "channels_last"):
        assert config_from_dict(data).scoring.memory_format == memory_format
        assert resolve_memory_format(memory_format) in ("contiguous", "channels_last")
    else:
        assert problems_of(data)[0].startswith("scoring.memory_format: must be one of")
        assert core_refuses(lambda: resolve_memory_format(memory_format))


@pytest.mark.parametrize(
    ("graph", "precision", "compile"),
    [
        (g, p, c)
        for g in ("auto", "frozen", "eager", "traced")
        for p in ("fp32", "bf16")
        for c in (False, True)
    ],
)
def test_graph_precision_compile_config_and_core_agree(graph, precision, compile):
    data = annotate(graph=graph, precision=precision, compile=compile)
    refused_by_core = core_refuses(lambda: resolve_graph(graph, "cpu", precision, compile))
    if refused_by_core:
        key = "scoring.graph" if graph == "traced" else "scoring"
        problem = problems_of(data)[0]
        assert problem.startswith(f"{key}: "), problem
        if graph == "frozen":
            assert ("compile" in problem) if compile and precision == "fp32" else ("fp32" in problem)
    else:
        scoring = config_from_dict(data).scoring
        assert (scoring.graph, scoring.precision, scoring.compile) == (graph, precision, compile)


def test_compile_is_refused_for_a_student_naming_the_key():
    data = annotate(mode="student", student_artifact="/s", compile=True)
    assert problems_of(data) == [
        "scoring: compile is not used with mode=student (a student runs eagerly): leave it unset"
    ]


# ----------------------------------------------------------------------------------------------- perturbations
# (field, value, allowed): the core's rules (0 = off for noise and occlusion; alphas in (0, 1))
PERTURBATION_CASES = [
    ("noise_masks", 0, True),
    ("noise_masks", 1, True),
    ("noise_masks", 10, True),
    ("noise_masks", -1, False),
    ("noise_masks", 2.5, False),
    ("occlusion_cell", 0, True),
    ("occlusion_cell", 14, True),
    ("occlusion_cell", 56, True),
    ("occlusion_cell", -14, False),
    ("noise_alphas", [], True),
    ("noise_alphas", [0.5], True),
    ("noise_alphas", [0.001, 0.2], True),
    ("noise_alphas", [0.0], False),
    ("noise_alphas", [1.0], False),
    ("noise_alphas", [0.001, 1.5], False),
    ("noise_alphas", [-0.1], False),
    ("flip", False, True),
    ("noise_seed", 7, True),
]


@pytest.mark.parametrize(("field", "value", "allowed"), PERTURBATION_CASES)
def test_perturbation_config_and_core_agree(field, value, allowed):
    core = lambda: PerturbationSettings(**{field: value})  # noqa: E731 - built once per branch
    assert core_refuses(core) is not allowed
    for where, data in [
        ("scoring.perturbation", annotate(perturbation={field: value})),
        ("self_training.perturbation", distill(self_training={"perturbation": {field: value}})),
    ]:
        if allowed:
            cfg = config_from_dict(data)
            section = (
                cfg.scoring.perturbation if where.startswith("scoring") else cfg.self_training.perturbation
            )
            assert PerturbationSettings.from_config(section) == core()
        else:
            problem = problems_of(data)[0]
            assert problem.startswith(f"{where}.{field}: "), problem


@pytest.mark.parametrize(
    "values",
    [
        {"flip": False, "noise_masks": 0, "occlusion_cell": 0},
        {"flip": False, "noise_alphas": [], "occlusion_cell": 0},
    ],
)
def test_no_component_left_is_refused_by_both(values):
    with pytest.raises(ValueError, match="at least one pseudo-label component"):
        PerturbationSettings(**values)
    problem = problems_of(annotate(perturbation=values))[0]
    assert problem.startswith("scoring.perturbation: at least one pseudo-label component"), problem


def test_only_noise_or_only_occlusion_is_allowed_by_both():
    for values in ({"flip": False, "occlusion_cell": 0}, {"flip": False, "noise_masks": 0}):
        section = config_from_dict(annotate(perturbation=values)).scoring.perturbation
        assert PerturbationSettings.from_config(section) == PerturbationSettings(**values)


def test_the_default_sections_are_the_core_defaults():
    section = config_from_dict(annotate()).scoring.perturbation
    assert PerturbationSettings.from_config(section) == PerturbationSettings()
    assert PerturbationSettings.from_config(section, max_forward_batch=64).max_forward_batch == 64


# ----------------------------------------------------------------------------------------------- scoring stage
def test_from_job_carries_every_scoring_key_of_a_model_job():
    data = annotate(
        precision="bf16",
        graph="eager",
        memory_format="contiguous",
        compile=True,
        quality_only=True,
        write_embedding=False,
        perturbation={"noise_masks": 3, "occlusion_cell": 0},
    )
    data["input"]["storage_options"] = {"anon": True}
    data["resources"] = {"model_batch_size": 16, "num_cpus_per_actor": 2, "actors": [1, 3]}
    data["model"] = {"name": "mobilefacenet", "weights": "/w.pt", "options": {"k": 1}}
    cfg = config_from_dict(data)
    stage = ScoringStageConfig.from_job(cfg, "froq", artifact_json="{}", candidate_layers=("a",))
    for name in ScoringConfig.model_fields:
        if name == "mode":
            continue  # the job driver picks the mode (annotate: froq / pseudo_label / student)
        expected = getattr(cfg.scoring, name)
        expected = expected.model_dump() if name == "perturbation" else expected
        assert getattr(stage, name) == expected, name
    assert (stage.mode, stage.model_name, stage.model_weights, stage.model_options) == (
        "froq",
        "mobilefacenet",
        "/w.pt",
        {"k": 1},
    )
    assert (stage.artifact_json, stage.candidate_layers, stage.storage_options) == (
        "{}",
        ("a",),
        {"anon": True},
    )
    assert (stage.model_batch_size, stage.num_cpus, stage.num_gpus, stage.actors) == (16, 2.0, 0.0, (1, 3))


def test_from_job_builds_the_distill_teacher_from_self_training():
    cfg = config_from_dict(
        distill(
            self_training={"precision": "fp16", "perturbation": {"noise_masks": 2}},
            resources={"device": "cpu"},
        )
    )
    stage = ScoringStageConfig.from_job(cfg, "pseudo_label", quality_only=True)
    assert (stage.precision, stage.device, stage.quality_only, stage.write_embedding) == (
        "fp16",
        "cpu",
        True,
        False,
    )
    assert stage.perturbation == cfg.self_training.perturbation.model_dump()
    assert (stage.graph, stage.memory_format, stage.compile) == ("auto", "auto", False)  # the stage defaults


def test_speed_options_are_not_in_the_digest():
    from froq_ray.config import config_digest

    base = config_digest(config_from_dict(annotate()))
    for scoring in ({"memory_format": "contiguous"}, {"compile": True}, {"graph": "eager"}):
        assert config_digest(config_from_dict(annotate(**scoring))) == base, scoring
    assert config_digest(config_from_dict(annotate(perturbation={"noise_masks": 0}))) != base
