"""Job configs: errors name the dotted key, overrides, relative paths, digests, redaction, shipped configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from froq_ray.config import (
    AnnotateJob,
    CalibrateJob,
    ConfigError,
    EvaluateJob,
    apply_overrides,
    config_digest,
    config_from_dict,
    load_config,
    resolved_dict,
)

REPO = Path(__file__).resolve().parents[2]


def annotate_data(**sections) -> dict:
    data = {"job": "annotate", "input": {"uri": "/data/in"}, "output": {"uri": "/data/out"}}
    data.update(sections)
    return data


def problems_of(data: dict, overrides: list[str] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, overrides)
    return info.value.problems


def test_defaults_are_the_documented_ones():
    cfg = config_from_dict(annotate_data())
    assert isinstance(cfg, AnnotateJob)
    assert cfg.model.name == "dlib_resnet_v1" and cfg.model.weights is None
    assert cfg.calibration.artifact == "builtin" and cfg.calibration.top_n == 10
    assert (cfg.scoring.mode, cfg.scoring.precision) == ("froq", "fp32")
    p = cfg.scoring.perturbation
    assert (p.flip, p.noise_masks, p.noise_alphas, p.noise_seed, p.occlusion_cell) == (
        True,
        10,
        [0.001],
        0,
        14,
    )
    r = cfg.resources
    assert r.ray_address is None and r.actors == 1 and r.num_gpus_per_actor == 0 and r.num_cpus_per_actor == 1
    assert (r.ray_batch_size, r.model_batch_size, r.device) == (256, 128, "auto")
    assert (cfg.output.mode, cfg.output.shard_size) == ("resume", 2_048)


def test_unknown_key_names_the_dotted_key_and_suggests():
    problems = problems_of(annotate_data(output={"uri": "/o", "mod": "resume"}))
    assert problems == ["output.mod: unknown key (did you mean 'mode'?)"]


def test_unknown_nested_key_and_unknown_section():
    data = annotate_data(scoring={"perturbation": {"noise_mask": 3}}, resorces={})
    problems = problems_of(data)
    assert "scoring.perturbation.noise_mask: unknown key (did you mean 'noise_masks'?)" in problems
    assert "resorces: unknown key (did you mean 'resources'?)" in problems


def test_out_of_range_and_wrong_type_and_enum():
    data = annotate_data(resources={"actors": 0, "ray_batch_size": "many"}, scoring={"precision": "fp8"})
    problems = problems_of(data)
    assert (
        "resources.actors: must be a count >= 1 or a range [min, max] with 1 <= min <= max (got 0)"
        in problems
    )
    assert "resources.ray_batch_size: must be an integer (got 'many')" in problems
    assert any(p.startswith("scoring.precision: must be one of 'fp32', 'bf16' or 'fp16'") for p in problems)
    assert len(problems) == 3


def test_missing_required_keys_and_job():
    assert sorted(problems_of({"job": "annotate"})) == [
        "input: required key missing",
        "output: required key missing",
    ]
    assert problems_of({"input": {"uri": "x"}})[0].startswith("job: required key missing")
    assert (
        problems_of({"job": "annotat"})[0]
        == "job: must be one of calibrate, annotate, evaluate, filter, distill, export, review (got 'annotat')"
    )


def test_cross_field_rules_name_their_section():
    data = annotate_data(scoring={"quality_only": True, "write_embedding": True})
    assert problems_of(data)[0].startswith("scoring: quality_only=true stops before the embedding")
    assert problems_of(annotate_data(resources={"device": "cuda"}))[0].startswith(
        "resources: device=cuda needs"
    )
    data = annotate_data(input={"uri": "/x", "identity_column": "who", "identity_from_folder": True})
    assert problems_of(data)[0].startswith("input: identity_column and identity_from_folder")


def test_student_scoring_mode_rules():
    cfg = config_from_dict(annotate_data(scoring={"mode": "student", "student_artifact": "/a/student"}))
    assert cfg.scoring.student_artifact == "/a/student"
    assert cfg.scoring.write_embedding is False  # a student has no embedding: the default follows
    assert problems_of(annotate_data(scoring={"mode": "student"}))[0].startswith(
        "scoring: mode=student needs student_artifact"
    )
    data = annotate_data(scoring={"mode": "student", "student_artifact": "/s", "write_embedding": True})
    assert problems_of(data)[0].startswith("scoring: a student writes no embedding")
    assert problems_of(annotate_data(scoring={"student_artifact": "/s"}))[0].startswith(
        "scoring: student_artifact is only used with mode=student"
    )
    data = {**annotate_data(scoring={"mode": "student", "student_artifact": "/s"}), "job": "calibrate"}
    assert "calibration observes a face-recognition model" in problems_of(data)[0]


def test_job_classes_and_expected_job():
    assert isinstance(config_from_dict({**annotate_data(), "job": "calibrate"}), CalibrateJob)
    ev = config_from_dict({"job": "evaluate", "evaluate": {"annotations": "/a"}, "output": {"uri": "/o"}})
    assert isinstance(ev, EvaluateJob) and ev.evaluate.fmr == 1e-3 and ev.evaluate.threshold_mode == "fixed"
    with pytest.raises(
        ConfigError, match="this config is for 'annotate', but the 'calibrate' command was run"
    ):
        config_from_dict(annotate_data(), expected_job="calibrate")
    # evaluate has no model sections: a model key there is a typo-class error
    bad = {"job": "evaluate", "evaluate": {"annotations": "/a"}, "output": {"uri": "/o"}, "model": {}}
    assert problems_of(bad)[0].startswith("model: unknown key")


def test_overrides_parse_yaml_values_and_create_sections():
    cfg = config_from_dict(
        annotate_data(),
        [
            "resources.actors=4",
            "scoring.perturbation.noise_alphas=[0.001, 0.002]",
            "resources.ray_address=auto",
            "input.limit=null",
            "output.storage_options.anon=true",
        ],
    )
    assert cfg.resources.actors == 4
    assert cfg.scoring.perturbation.noise_alphas == [0.001, 0.002]
    assert cfg.resources.ray_address == "auto" and cfg.input.limit is None
    assert cfg.output.storage_options == {"anon": True}
    assert problems_of(annotate_data(), ["resources.actor=2"]) == [
        "resources.actor: unknown key (did you mean 'actors'?)"
    ]


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides({}, ["resources.actors"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"job": "annotate"}, ["job.x=1"])
    original = {"resources": {"actors": 1}}
    assert apply_overrides(original, ["resources.actors=3"]) == {"resources": {"actors": 3}}
    assert original == {"resources": {"actors": 1}}


def test_relative_paths_resolve_against_cwd(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    cfg_file = tmp_path / "conf" / "job.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "job": "annotate",
                "input": {"uri": "imgs"},
                "output": {"uri": "s3://bucket/out"},
                "model": {"weights": "w/model.pt"},
                "calibration": {"artifact": "cal.json"},
            }
        )
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config(cfg_file)
    assert cfg.input.uri == str(work / "imgs")
    assert cfg.model.weights == str(work / "w" / "model.pt")
    assert cfg.calibration.artifact == str(work / "cal.json")
    assert cfg.output.uri == "s3://bucket/out"
    assert config_from_dict(annotate_data()).calibration.artifact == "builtin"


def test_load_config_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("job: annotate\ninput: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(annotate_data(output={"uri": "/o", "shard_sise": 5})))
    with pytest.raises(ConfigError) as info:
        load_config(typo)
    assert str(typo) in str(info.value)
    assert "output.shard_sise: unknown key (did you mean 'shard_size'?)" in str(info.value)


def test_digest_stable_and_blind_to_resources_and_output_location():
    base = config_from_dict(annotate_data())
    same = config_from_dict(annotate_data())
    assert config_digest(base) == config_digest(same)
    assert len(config_digest(base)) == 64
    insensitive = [
        ["resources.actors=8"],
        ["resources.num_gpus_per_actor=1", "resources.device=cuda"],
        ["resources.ray_batch_size=64", "resources.model_batch_size=8"],
        ["resources.ray_address=auto"],
        ["output.mode=overwrite"],
        ["output.uri=s3://elsewhere/out"],
        ["output.progress_interval_s=5"],
        ["input.storage_options.secret=abc"],
        ["output.storage_options.key=k"],
        ["scoring.graph=eager"],  # a checked speed option: a resume may switch it
    ]
    for items in insensitive:
        assert config_digest(config_from_dict(annotate_data(), items)) == config_digest(base), items
    sensitive = [
        "scoring.perturbation.noise_seed=1",
        "output.shard_size=100",
        "model.name=mobilefacenet",
        "calibration.artifact=/c.json",
        "scoring.precision=fp16",
        "input.limit=10",
        "job=calibrate",
    ]
    digests = {config_digest(config_from_dict(annotate_data(), [item])) for item in sensitive}
    assert len(digests) == len(sensitive) and config_digest(base) not in digests


def test_digest_extra_folds_in_resolved_identities():
    cfg = config_from_dict(annotate_data())
    a = config_digest(cfg, {"weights_sha256": "aa", "calibration_id": "c1"})
    assert a == config_digest(cfg, {"calibration_id": "c1", "weights_sha256": "aa"})
    assert a != config_digest(cfg, {"weights_sha256": "aa", "calibration_id": "c2"})
    assert a != config_digest(cfg) and config_digest(cfg, {}) == config_digest(cfg)


def test_digest_does_not_depend_on_key_order():
    a = config_from_dict(annotate_data(scoring={"mode": "pseudo_label", "precision": "bf16"}))
    b = config_from_dict(annotate_data(scoring={"precision": "bf16", "mode": "pseudo_label"}))
    assert config_digest(a) == config_digest(b)


def test_resolved_dict_redacts_credentials():
    cfg = config_from_dict(
        annotate_data(
            input={
                "uri": "s3://b/in",
                "storage_options": {
                    "key": "AKIA123",
                    "secret": "s3cr3t",
                    "client_kwargs": {"endpoint_url": "http://h:9000"},
                },
            },
            output={"uri": "s3://b/out", "storage_options": {"token": "tok", "anon": False}},
        )
    )
    resolved = resolved_dict(cfg)
    assert resolved["input"]["storage_options"] == {
        "key": "***",
        "secret": "***",
        "client_kwargs": {"endpoint_url": "http://h:9000"},
    }
    assert resolved["output"]["storage_options"] == {"token": "***", "anon": False}
    text = repr(resolved)
    assert "AKIA123" not in text and "s3cr3t" not in text and "tok'" not in text
    assert cfg.input.storage_options["key"] == "AKIA123"  # the live config keeps them


@pytest.mark.parametrize("job", ["annotate", "calibrate", "evaluate"])
def test_shipped_configs_validate(job, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(REPO / "configs" / f"{job}.yaml", expected_job=job)
    assert cfg.job == job
    assert cfg.output.uri == str(REPO / "out" / job)
    if job != "evaluate":
        assert cfg.input.uri == os.path.abspath(REPO / ".." / "shared" / "data" / "lfw-dev" / "images")
        assert Path(cfg.input.uri).is_dir()
        assert cfg.model.name == "dlib_resnet_v1"


def test_override_text_is_read_by_the_field_type():
    items = [
        "input.uri=/a #b",
        "model.weights=",
        "resources.actors=3",
        "model.options.x=[1, 2]",
        "job=annotate",
    ]
    assert apply_overrides({}, items, job_class=AnnotateJob) == {
        "input": {"uri": "/a #b"},
        "model": {"weights": None, "options": {"x": [1, 2]}},
        "resources": {"actors": 3},
        "job": "annotate",
    }
    # without a job class every text is YAML (the job is unknown, so no field types are)
    assert apply_overrides({}, ["input.uri=/a #b"]) == {"input": {"uri": "/a"}}
    # values are set as given, before the overrides
    assert apply_overrides(
        {}, ["output.mode=resume"], AnnotateJob, {"output.mode": "overwrite", "x.y": " 1"}
    ) == {
        "output": {"mode": "resume"},
        "x": {"y": " 1"},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("4", (4, 4)), ("[1, 8]", (1, 8)), ("[2, 2]", (2, 2))],
)
def test_actors_is_a_count_or_an_autoscaling_range(value, expected):
    cfg = config_from_dict(
        {"job": "annotate", "input": {"uri": "/i"}, "output": {"uri": "/o"}}, [f"resources.actors={value}"]
    )
    assert cfg.resources.actor_range == expected


@pytest.mark.parametrize("value", ["0", "[8, 1]", "[0, 2]", "[1, 2, 3]", "true", "[1.5, 2]"])
def test_a_bad_actor_count_or_range_is_one_error_naming_the_key(value):
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {"job": "annotate", "input": {"uri": "/i"}, "output": {"uri": "/o"}},
            [f"resources.actors={value}"],
        )
    (problem,) = info.value.problems
    assert problem.startswith("resources.actors: must be a count >= 1 or a range [min, max]")


def test_scoring_graph_values_and_rules_name_the_key():
    assert config_from_dict(annotate_data()).scoring.graph == "auto"
    assert config_from_dict(annotate_data(), ["scoring.graph=frozen"]).scoring.graph == "frozen"
    assert problems_of(annotate_data(scoring={"graph": "traced"}))[0].startswith("scoring.graph: ")
    assert problems_of(annotate_data(scoring={"graph": "frozen", "precision": "bf16"})) == [
        "scoring: graph=frozen runs fp32 only (precision is 'bf16'): use graph=auto or eager"
    ]
    assert problems_of(annotate_data(scoring={"graph": "eager", "mode": "pseudo_label"})) == [
        "scoring: graph is the FROQ scorer's setting (mode=froq); mode is 'pseudo_label'"
    ]
    assert config_from_dict(annotate_data(scoring={"mode": "pseudo_label"})).scoring.graph == "auto"
    data = {**annotate_data(scoring={"graph": "eager"}), "job": "calibrate"}
    assert problems_of(data) == ["scoring.graph: the calibrate job runs no FROQ scorer (leave graph unset)"]


RESOURCE_FLOATS = [
    "no_progress_timeout_s",
    "headroom_cpus",
    "num_gpus_per_actor",
    "num_cpus_per_actor",
    "decode_num_cpus",
    "export_num_cpus",
]


@pytest.mark.parametrize("key", RESOURCE_FLOATS)
@pytest.mark.parametrize("value", ["inf", ".inf", "-inf", "nan", ".nan", "1e999"])
def test_a_non_finite_resources_number_is_one_error_naming_the_key(key, value):
    # from the command line (YAML reads "inf"/".inf"/"1e999" as float infinity) and from a YAML config file
    assert problems_of(annotate_data(), [f"resources.{key}={value}"])[0].startswith(f"resources.{key}: ")
    parsed = yaml.safe_load(f"x: {value}")["x"]
    problems = problems_of(annotate_data(resources={key: parsed}))
    assert len(problems) == 1 and problems[0].startswith(f"resources.{key}: "), problems
    assert config_from_dict(annotate_data(), [f"resources.{key}=2.5"]).resources.model_dump()[key] == 2.5


def test_an_infinite_timeout_says_it_must_be_finite():
    assert problems_of(annotate_data(), ["resources.no_progress_timeout_s=inf"]) == [
        "resources.no_progress_timeout_s: must be a finite number, not inf or nan (got 'inf')"
    ]


def test_evaluate_scores_takes_one_path_as_typed_or_a_list(tmp_path):
    base = {"job": "evaluate", "evaluate": {"annotations": "/runs/a"}, "output": {"uri": "/o"}}
    one = tmp_path / "other tool #1.csv"
    cfg = config_from_dict(base, [f"evaluate.scores={one}"])
    assert cfg.evaluate.scores == [str(one)]
    cfg = config_from_dict(base, [f"evaluate.scores=[{tmp_path / 'a.csv'}, {tmp_path / 'b.parquet'}]"])
    assert cfg.evaluate.scores == [str(tmp_path / "a.csv"), str(tmp_path / "b.parquet")]
    # a lone path in the YAML file too; a relative one is made absolute like every local path
    cfg = config_from_dict({**base, "evaluate": {**base["evaluate"], "scores": "scores.csv"}})
    assert cfg.evaluate.scores == [os.path.abspath("scores.csv")]
    assert config_from_dict(base).evaluate.scores == []
    # other list-of-texts keys take one text as typed too (README: --set)
    cfg = config_from_dict(base, ["evaluate.lower_is_better=brisque #2", "evaluate.quality_columns=pl_flip"])
    assert cfg.evaluate.lower_is_better == ["brisque #2"] and cfg.evaluate.quality_columns == ["pl_flip"]
