"""Throughput benchmark orchestration without Ray: settings, batch sizing, annotate configs, scorer variants,
ratios, the table, and a small in-process run (crops -> calibration -> reference loop -> scorer variants)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from froq_ray.bench.monitor import PhaseResources
from froq_ray.bench.ray_phases import AnnotatePhase, RayResources, ShardCommits, annotate_config
from froq_ray.bench.reference_loop import LoopResult
from froq_ray.bench.scoring import DecodeRate, Variant, default_variants, rank_agreement, time_variant
from froq_ray.bench.throughput import (
    BenchSettings,
    default_ray_batch_size,
    headline,
    run_benchmark,
    table,
    write_result,
)
from froq_ray.quality.scorer import FroqScorer
from tests.tiny_models import hand_artifact, random_crops, tiny_fr_model


def test_device_and_precision_defaults():
    cpu = BenchSettings(device="cpu")
    assert cpu.resolved_device() == "cpu" and cpu.resolved_precision() == "fp32"
    assert BenchSettings(device="cuda").resolved_precision() == "bf16"
    assert BenchSettings(device="cuda", precision="fp32").resolved_precision() == "fp32"
    assert BenchSettings().resolved_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_ray_batch_size_gives_every_decode_slot_several_blocks():
    assert default_ray_batch_size(256, 1) == 64  # floor
    assert default_ray_batch_size(2000, 15) == 64  # 2000 / 60 blocks = 33 rows, raised to the floor
    assert default_ray_batch_size(100_000, 15) == 1024  # ceiling
    assert default_ray_batch_size(20_000, 4) == 1024 and default_ray_batch_size(8_000, 4) == 500


def test_annotate_config_per_phase(tmp_path):
    resources = RayResources(num_cpus=16, device="cuda", ray_batch_size=512, model_batch_size=1024)
    common = {"model_name": "dlib_resnet_v1", "weights": None, "artifact": "builtin", "resources": resources}
    full = annotate_config(tmp_path, tmp_path / "o", **common)
    assert full.scoring.mode == "froq" and full.scoring.write_embedding and not full.scoring.quality_only
    r = full.resources
    assert (r.device, r.num_gpus_per_actor, r.ray_batch_size, r.model_batch_size, r.num_cpus) == (
        "cuda",
        1,
        512,
        1024,
        16,
    )
    assert full.output.mode == "overwrite" and full.input.identity_from_folder
    fast = annotate_config(tmp_path, tmp_path / "o", quality_only=True, precision="bf16", **common)
    assert fast.scoring.quality_only and not fast.scoring.write_embedding and fast.scoring.precision == "bf16"
    pl = annotate_config(tmp_path, tmp_path / "o", mode="pseudo_label", limit=16, **common)
    assert pl.scoring.mode == "pseudo_label" and pl.input.limit == 16
    cpu = RayResources.for_machine(2, "cpu", 64, 64)
    assert cpu.decode_slots == 1 and cpu.config()["num_gpus_per_actor"] == 0
    assert (cpu.num_cpus, cpu.config()["num_cpus_per_actor"]) == (3, 2)  # both cores as the actor's threads
    gpu = RayResources.for_machine(16, "cuda", 512, 1024)
    assert gpu.decode_slots == 15 and gpu.config()["num_cpus_per_actor"] == 1 and gpu.num_cpus == 16


def test_variants_and_rank_agreement():
    names = [v.name for v in default_variants("cuda", with_bf16=True, with_compile=True)]
    assert names == [
        "fp32+nchw",
        "fp32+channels_last",
        "bf16+nchw",
        "bf16+channels_last",
        "bf16+channels_last+quality_only",
        "bf16+channels_last+compiled",
    ]
    assert [v.name for v in default_variants("cpu", False, False)] == [
        "fp32+nchw",
        "fp32+channels_last",
        "fp32+channels_last+frozen",
        "fp32+channels_last+quality_only+frozen",
        "fp32+channels_last+quality_only",
    ]
    model = tiny_fr_model(size=16)
    artifact = hand_artifact(model, ["block.act", "stem"])
    crops = random_crops(10, 16, seed=3)
    results = [
        time_variant(model, artifact, crops, v, device="cpu", model_batch_size=4)
        for v in (
            Variant(),
            Variant(memory_format="channels_last", quality_only=True),
            Variant(memory_format="channels_last", graph="frozen"),
        )
    ]
    expected = FroqScorer(model, artifact).score(crops).quality
    for r in results:
        np.testing.assert_allclose(r.quality, expected, rtol=1e-4)
        assert r.images == 10 and r.images_per_second > 0
    assert results[1].memory_format_used == "channels_last"
    assert [r.to_dict()["graph_used"] for r in results] == ["eager", "eager", "frozen"]
    assert all(p.is_contiguous() for p in model.network.parameters())  # restored after the variant
    assert rank_agreement(results) == {
        "fp32+channels_last+quality_only": pytest.approx(1.0),
        "fp32+channels_last+frozen": pytest.approx(1.0),
    }
    results[1].quality = -results[1].quality
    assert rank_agreement(results)["fp32+channels_last+quality_only"] == pytest.approx(-1.0)


def _phase(name: str, images: int, seconds: float) -> AnnotatePhase:
    resources = PhaseResources(1000.0, None, None, None, None)
    scoring = {"precision": "fp32"}
    return AnnotatePhase(
        name,
        images,
        seconds,
        images / seconds,
        resources,
        {"counts_by_status": {"ok": images}, "scoring": scoring},
    )


def test_headline_ratios_come_from_the_same_run():
    reference = [
        {"num_workers": 0, "images_per_second": 50.0},
        {"num_workers": 16, "images_per_second": 200.0},
    ]
    phases = [_phase("annotate", 1000, 2.0), _phase("quality_only", 1000, 1.0)]
    assert headline(reference, phases) == {
        "ratio_annotate_vs_reference_0_workers": 10.0,
        "ratio_annotate_vs_reference_16_workers": 2.5,
        "quality_only_gain_end_to_end": 2.0,
    }
    assert headline([], [_phase("annotate", 10, 1.0)]) == {}


def test_headline_compares_annotate_with_the_scorer_variant_a_cpu_actor_runs(tmp_path):
    scorer = [
        {"variant": "fp32+channels_last", "graph_used": "eager", "images_per_second": 50.0},
        {"variant": "fp32+channels_last+frozen", "graph_used": "frozen", "images_per_second": 125.0},
        {
            "variant": "fp32+channels_last+quality_only+frozen",
            "graph_used": "frozen",
            "images_per_second": 1e3,
        },
    ]
    # three markers written 4 s, 6 s and 10 s after the phase start: 512 + 256 rows after the first one
    state = tmp_path / "_froq"
    state.mkdir()
    for index, (rows, at) in enumerate(((512, 4.0), (512, 6.0), (256, 10.0))):
        marker = state / f"part-{index:05d}.done.json"
        marker.write_text(json.dumps({"rows": rows}))
        os.utime(marker, (100.0 + at, 100.0 + at))
    (state / "manifest.json").write_text("{}")  # not a marker
    commits = ShardCommits.of(tmp_path, started_at=100.0)
    assert commits == ShardCommits(first_shard_seconds=4.0, steady_images_per_second=768 / 6.0, shards=3)
    annotate = _phase("annotate", 1280, 12.8)
    annotate.commits = commits
    assert headline([], [annotate], scorer) == {
        "ratio_annotate_vs_scorer": 0.8,
        "ratio_annotate_steady_vs_scorer": round(128 / 125, 3),
    }
    assert commits.to_dict() == {
        "first_shard_seconds": 4.0,
        "steady_images_per_second": 128.0,
        "shards_committed": 3,
    }
    (tmp_path / "empty" / "_froq").mkdir(parents=True)
    assert ShardCommits.of(tmp_path / "empty", started_at=0.0) is None


def test_small_in_process_run_writes_every_number(tmp_path, mobilefacenet_pt):
    settings = BenchSettings(
        arch="mobilefacenet",
        weights=str(mobilefacenet_pt),
        n=20,
        device="cpu",
        reference_workers=[0],
        skip=("annotate", "quality_only", "pseudo_label"),
        work_dir=str(tmp_path / "work"),
        num_cpus=1,
    )
    result = run_benchmark(settings)
    assert result["crops"]["images"] == 20 and result["decode"]["images_per_second"] > 0
    assert result["calibration"]["selected_layers"] and "quick calibration" in result["calibration"]["source"]
    (reference,) = result["reference"]
    assert (
        reference["images"] == 20 and reference["num_workers"] == 0 and reference["peak_host_rss_mib"] > 100
    )
    assert [r["variant"] for r in result["scorer"]] == [v.name for v in default_variants("cpu", False, False)]
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in result["spearman_vs_fp32"].values())
    assert result["ray"] == [] and result["headline"] == {}
    text = table(result)
    assert "(a) reference loop, 0 workers, fp32" in text and "scorer only (no Ray) fp32+nchw" in text
    write_result(result, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["arch"] == "mobilefacenet"


def test_rates_and_phase_record():
    # images / wall seconds, and 0.0 (not a ZeroDivisionError) when no time was measured
    assert DecodeRate(30, 1.5).images_per_second == 20.0
    assert DecodeRate(30, 0.0).images_per_second == 0.0
    assert LoopResult(7, 2.0, {}).images_per_second == 3.5
    manifest = {"counts_by_status": {"ok": 1000}, "results": {"scoring": {"precision": "fp32"}}}
    phase = AnnotatePhase(
        "annotate", 1000, 4.0, 300.0, PhaseResources(1000.0, None, None, None, None), manifest
    )
    record = phase.to_dict()
    assert {k: record[k] for k in ("phase", "images", "wall_seconds", "images_per_second")} == {
        "phase": "annotate",
        "images": 1000,
        "wall_seconds": 4.0,
        "images_per_second": 250.0,
    }
    assert record["streaming_images_per_second"] == 300.0 and record["scoring"] == {"precision": "fp32"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--skip", "nope"], "argument --skip: unknown phase(s) nope; known: reference,scorer"),
        (["--skip", "reference,nope,zzz"], "unknown phase(s) nope, zzz"),
        (["--n", "0"], "argument --n: must be >= 1, got 0"),
        (["--n", "1"], "argument --n: must be >= 2 (the quick calibration ranks layers across the crops)"),
        (["--n", "x"], "argument --n: 'x' is not a whole number"),
        (["--ray-batch-size", "-1"], "argument --ray-batch-size: must be >= 1"),
    ],
)
def test_the_benchmark_command_refuses_bad_arguments_on_one_line(argv, message, capsys):
    from froq_ray.bench.command import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_the_benchmark_command_reads_the_skip_list():
    from froq_ray.bench.command import parser

    assert parser().parse_args(["--skip", "reference, scorer"]).skip == ("reference", "scorer")
    assert parser().parse_args([]).skip == ()
