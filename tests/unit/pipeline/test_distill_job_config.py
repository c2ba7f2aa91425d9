"""The distill job's config section checks and digest, and the trainer's pure pieces (no Ray)."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import torch

from froq_ray.config import (
    STUDENT_ARCHS,
    TEACHER_TARGETS,
    ConfigError,
    LossSection,
    config_digest,
    config_from_dict,
)
from froq_ray.distill import losses, students
from froq_ray.engine.train import cosine_lr, load_optimizer, save_optimizer, validation_metrics
from froq_ray.imaging.degrade import ALL_KINDS
from froq_ray.pipeline.distill import decoded_bytes, should_cache_decoded
from froq_ray.storage.schema import PSEUDO_LABEL_COLUMNS


def distill_data(**sections) -> dict:
    data = {"job": "distill", "distill": {"annotations": "ann"}, "output": {"uri": "out"}}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value}
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    return err.value.problems


def test_defaults_resolve_paths_and_take_every_degradation_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(distill_data())
    assert cfg.distill.annotations == [str(tmp_path / "ann")]  # one string becomes a list, made absolute
    assert cfg.distill.target_column == "quality" and cfg.distill.validation_fraction == 0.2
    assert cfg.student.arch == "tiny_cnn" and cfg.student.input_size == 64
    assert tuple(cfg.self_training.kinds) == ALL_KINDS and "occlusion" in cfg.self_training.kinds
    assert not cfg.self_training.enabled and cfg.training.num_workers == 1


def test_unknown_and_bad_keys_name_their_dotted_key():
    found = problems(
        distill_data(
            training={"epoch": 3, "batch_size": 1, "loss": {"rank": "listwise"}},
            student={"arch": "resnet", "input_size": 8},
            self_training={"kinds": ["blurr"]},
            distill={"validation_fraction": 1.0, "identity_source": "path"},
        )
    )
    assert "training.epoch: unknown key (did you mean 'epochs'?)" in found
    assert "training.batch_size: must be >= 2 (got 1)" in found
    assert any(
        p.startswith("training.loss.rank: must be one of 'pairwise', 'correlation' or 'none'") for p in found
    )
    assert any(
        p.startswith("student.arch: must be one of 'tiny_cnn' or 'mobilefacenet_student'") for p in found
    )
    assert "student.input_size: must be >= 32 (got 8)" in found
    assert any(p.startswith("self_training.kinds: unknown degradation kind(s) ['blurr']") for p in found)
    assert "distill.validation_fraction: must be < 1.0 (got 1.0)" in found
    assert any(p.startswith("distill.identity_source: must be one of") for p in found)
    assert problems({"job": "distill", "output": {"uri": "o"}}) == ["distill: required key missing"]


def test_self_training_needs_a_target_the_teacher_computes():
    found = problems(distill_data(distill={"target_column": "cr"}, self_training={"enabled": True}))
    assert len(found) == 1 and found[0].startswith("self_training.enabled: the teacher cannot label")
    assert "'cr'" in found[0]
    for target in ("quality", "pseudo_label", "pl_noise"):
        config_from_dict(distill_data(distill={"target_column": target}, self_training={"enabled": True}))
    config_from_dict(
        distill_data(distill={"target_column": "cr"})
    )  # without self-training any column is fine
    assert problems(distill_data(self_training={"kinds": ["blur"], "kinds_per_copy": 2}))[0].startswith(
        "self_training: kinds_per_copy=2 exceeds the 1 kind(s)"
    )


def test_choices_match_the_modules_that_implement_them():
    assert STUDENT_ARCHS == students.STUDENT_ARCHS
    assert ("quality", *PSEUDO_LABEL_COLUMNS) == TEACHER_TARGETS
    hints = typing.get_type_hints(LossSection)
    assert typing.get_args(hints["regression"]) == losses.REGRESSION_KINDS
    assert typing.get_args(hints["rank"]) == losses.RANK_KINDS


def test_digest_ignores_resources_output_location_and_credentials_but_not_training():
    base = config_from_dict(distill_data())
    same = config_from_dict(
        distill_data(
            resources={"actors": 4, "ray_batch_size": 32},
            output={"uri": "elsewhere", "mode": "overwrite"},
            distill={"storage_options": {"key": "k", "secret": "s"}},
        )
    )
    assert config_digest(base) == config_digest(same)
    for changed in (
        distill_data(training={"lr": 0.01}),
        distill_data(student={"input_size": 112}),
        distill_data(distill={"split_seed": 1}),
        distill_data(self_training={"copies": 2}),
    ):
        assert config_digest(config_from_dict(changed)) != config_digest(base)


def test_cosine_schedule_runs_from_the_base_rate_to_zero():
    assert cosine_lr(0, 10, 0.1) == pytest.approx(0.1)
    assert cosine_lr(5, 10, 0.1) == pytest.approx(0.05)
    assert cosine_lr(10, 10, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(12, 10, 0.1) == pytest.approx(0.0, abs=1e-12)  # clamped past the end


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    save_optimizer(opt, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]
    fresh = torch.optim.AdamW(net.parameters(), lr=0.5)
    load_optimizer(fresh, str(tmp_path))
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 0.01
    for index, entries in a["state"].items():
        for name, value in entries.items():
            assert torch.equal(value, b["state"][index][name])
    # the restored optimizer takes exactly the step the original takes
    grads = [torch.randn_like(p) for p in net.parameters()]
    before = [p.detach().clone() for p in net.parameters()]
    results = []
    for optimizer in (opt, fresh):
        with torch.no_grad():
            for p, start in zip(net.parameters(), before, strict=True):
                p.copy_(start)
        for p, g in zip(net.parameters(), grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        results.append([p.detach().clone() for p in net.parameters()])
    assert all(torch.equal(x, y) for x, y in zip(*results, strict=True))


def test_validation_metrics_in_teacher_units():
    target = np.array([1.0, 2.0, 3.0, 4.0])
    m = validation_metrics(target * 2 + 1, target)
    assert m["validation_spearman"] == pytest.approx(1.0) and m["validation_pearson"] == pytest.approx(1.0)
    assert m["validation_mse"] == pytest.approx(float(np.mean((target + 1) ** 2)))
    assert m["validation_rows"] == 4
    empty = validation_metrics(np.empty(0), np.empty(0))
    assert math.isnan(empty["validation_spearman"]) and math.isnan(empty["validation_mse"])
    assert empty["validation_rows"] == 0


def test_relative_init_weights_resolve_against_the_current_directory(tmp_path, monkeypatch):
    # the Ray Train workers run in another directory: a relative path must not reach them
    monkeypatch.chdir(tmp_path)
    options = {"init_weights": "models/mfn.pt", "head_hidden": 64}
    cfg = config_from_dict(distill_data(student={"arch": "mobilefacenet_student", "options": options}))
    assert cfg.student.options == {"init_weights": str(tmp_path / "models" / "mfn.pt"), "head_hidden": 64}


def test_digest_ignores_worker_cpus_checkpoint_retention_and_the_decode_cache():
    base = config_digest(config_from_dict(distill_data()))
    same = distill_data(training={"cpus_per_worker": 2, "keep_checkpoints": 5, "cache_decoded": False})
    assert config_digest(config_from_dict(same)) == base
    assert config_digest(config_from_dict(distill_data(training={"epochs": 3}))) != base


def test_cache_decoded_takes_a_bool_or_auto_and_names_the_key_otherwise():
    assert config_from_dict(distill_data()).training.cache_decoded == "auto"
    assert config_from_dict(distill_data(training={"cache_decoded": False})).training.cache_decoded is False
    with pytest.raises(ConfigError, match="training.cache_decoded"):
        config_from_dict(distill_data(training={"cache_decoded": "sometimes"}))


def test_auto_caches_decoded_crops_only_when_they_fit_a_quarter_of_the_object_store():
    crops = decoded_bytes(1000, 112)
    assert crops == 1000 * 112 * 112 * 3
    assert should_cache_decoded("auto", crops, object_store_bytes=4 * crops)
    assert not should_cache_decoded("auto", crops, object_store_bytes=4 * crops - 1)
    assert not should_cache_decoded("auto", crops, object_store_bytes=0)  # no store known: stream
    assert should_cache_decoded(True, crops, object_store_bytes=0)
    assert not should_cache_decoded(False, 1, object_store_bytes=1e12)
