"""Command-line values are used as typed: shortcut flags and string-typed ``--set`` keys are never read as YAML
(issue 13 item 1); typed keys still are."""

from __future__ import annotations

import os

import pytest

from froq_ray.cli import build_parser, job_config
from froq_ray.config import ConfigError

# names that YAML would cut (#), turn into a list or flow error ([ ]), an alias (*), a number (2019), a bool
# (yes), null, or strip (spaces)
LOCAL_NAMES = [
    "/data/in/set #2",
    "/data/out/run #2",
    "/data/out/run #1 [a]",
    "/data/what?",
    "*faces",
    "2019",
    "yes",
    "null",
    " leading space",
    "trailing space ",
    "/data/a: b",
    "[a]",
]
REMOTE_NAMES = ["s3://bucket/out/run #1 [a]/", "s3://bucket/in/set #2/", "s3://bucket/what?/x"]


def annotate(*argv: str):
    return job_config(build_parser().parse_args(["annotate", *argv]), "annotate")


def expected(typed: str) -> str:
    return typed if typed.startswith("s3://") else os.path.abspath(typed)


@pytest.mark.parametrize("typed", LOCAL_NAMES + REMOTE_NAMES)
def test_input_and_output_flags_are_used_exactly_as_typed(typed):
    cfg = annotate("--input", typed, "--output", typed, "--mode", "overwrite")
    assert cfg.input.uri == expected(typed)
    assert cfg.output.uri == expected(typed)
    assert cfg.output.mode == "overwrite"


@pytest.mark.parametrize("typed", LOCAL_NAMES + REMOTE_NAMES)
def test_set_of_a_string_key_is_used_exactly_as_typed(typed):
    cfg = annotate(
        "--set",
        f"input.uri={typed}",
        "--set",
        f"output.uri={typed}",
        "--set",
        f"model.weights={typed}",
        "--set",
        f"input.path_column={typed}",
        "--set",
        f"resources.ray_address={typed}",
    )
    assert (cfg.input.uri, cfg.output.uri, cfg.model.weights) == (expected(typed),) * 3
    assert cfg.input.path_column == typed and cfg.resources.ray_address == typed


def test_the_earlier_run_output_is_not_the_target():
    """The reported case: `run #2` used to become `run`, an earlier run's output, and was overwritten."""
    cfg = annotate("--input", "/data/in/set #2", "--output", "/data/out/run #2", "--mode", "overwrite")
    assert cfg.input.uri == "/data/in/set #2" and cfg.output.uri == "/data/out/run #2"


def test_set_wins_over_a_shortcut_and_a_config_file(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("job: annotate\ninput: {uri: '/from/file #1'}\noutput: {uri: /o}\n")
    args = build_parser().parse_args(
        ["annotate", "--config", str(config), "--input", "/flag #2", "--set", "input.uri=/set #3"]
    )
    assert job_config(args, "annotate").input.uri == "/set #3"
    args = build_parser().parse_args(["annotate", "--config", str(config), "--output", "/o #2"])
    cfg = job_config(args, "annotate")
    assert (cfg.input.uri, cfg.output.uri) == ("/from/file #1", "/o #2")


def test_literal_string_choices_are_checked_as_typed():
    cfg = annotate("--input", "/i", "--output", "/o", "--set", "scoring.mode=pseudo_label")
    assert cfg.scoring.mode == "pseudo_label"
    with pytest.raises(ConfigError) as info:
        annotate("--input", "/i", "--output", "/o", "--set", "scoring.precision= fp32")
    assert info.value.problems == ["scoring.precision: must be one of 'fp32', 'bf16' or 'fp16' (got ' fp32')"]


def test_typed_keys_are_still_read_as_yaml():
    cfg = annotate(
        "--input",
        "/i",
        "--output",
        "/o",
        "--set",
        "resources.actors=4",
        "--set",
        "input.extensions=[.jpg]",
        "--set",
        "model.options.channel_permutation=reference",
        "--set",
        "scoring.write_embedding=false",
        "--set",
        "output.progress_interval_s=2.5",
        "--set",
        "input.limit=null",
        "--set",
        "input.storage_options.client_kwargs.endpoint_url=http://127.0.0.1:9000",
        "--set",
        "output.storage_options.anon=true",
        "--set",
        "scoring.perturbation.noise_alphas=[0.001, 0.002]",
    )
    assert cfg.resources.actors == 4 and isinstance(cfg.resources.actors, int)
    assert cfg.input.extensions == [".jpg"]
    assert cfg.model.options == {"channel_permutation": "reference"}
    assert cfg.scoring.write_embedding is False
    assert cfg.output.progress_interval_s == 2.5
    assert cfg.input.limit is None
    assert cfg.input.storage_options == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
    assert cfg.output.storage_options == {"anon": True}
    assert cfg.scoring.perturbation.noise_alphas == [0.001, 0.002]


def test_an_empty_value_sets_an_optional_string_to_null():
    cfg = annotate(
        "--input", "/i", "--output", "/o", "--set", "model.weights=/w.pt", "--set", "model.weights="
    )
    assert cfg.model.weights is None
    with pytest.raises(ConfigError) as info:  # a required string stays the empty text, and is refused
        annotate("--input", "", "--output", "/o")
    assert info.value.problems == ["input.uri: must not be empty (got '')"]


def test_annotations_shortcuts_and_string_lists():
    evaluate = job_config(
        build_parser().parse_args(["evaluate", "--annotations", "/runs/run #2", "--output", "/o #3"]),
        "evaluate",
    )
    assert evaluate.evaluate.annotations == "/runs/run #2" and evaluate.output.uri == "/o #3"
    filt = job_config(
        build_parser().parse_args(["filter", "--annotations", "2019", "--output", "/o"]), "filter"
    )
    assert filt.filter.annotations == [os.path.abspath("2019")]
    distill = job_config(
        build_parser().parse_args(["distill", "--annotations", "/runs/run #2", "--output", "/o"]), "distill"
    )
    assert distill.distill.annotations == ["/runs/run #2"]
    # a list of strings: one literal text, or a YAML list when it starts with "["
    distill = job_config(
        build_parser().parse_args(["distill", "--output", "/o", "--set", "distill.annotations=/runs/run #2"]),
        "distill",
    )
    assert distill.distill.annotations == ["/runs/run #2"]
    distill = job_config(
        build_parser().parse_args(
            ["distill", "--output", "/o", "--set", "distill.annotations=[/a, '/b #2']"]
        ),
        "distill",
    )
    assert distill.distill.annotations == ["/a", "/b #2"]


def test_unknown_keys_still_name_the_dotted_key():
    with pytest.raises(ConfigError) as info:
        annotate("--input", "/i", "--output", "/o", "--set", "output.mod=overwrite #1")
    assert info.value.problems == ["output.mod: unknown key (did you mean 'mode'?)"]
    with pytest.raises(ConfigError) as info:
        annotate("--input", "/i", "--output", "/o", "--set", "resources.actors=four")
    assert info.value.problems == [
        "resources.actors: must be a count >= 1 or a range [min, max] with 1 <= min <= max (got 'four')"
    ]
