"""Cost table (issue 8): params, FLOPs per image and CPU images/s of each student vs the teacher FROQ
(MobileFaceNet, one observed forward pass) and vs the pseudo-label teacher (flip + 10 noise + 64 occlusion
copies = 76 perturbed passes per image, plus the reference pass).

Every row runs the whole per-image work from uint8 112x112 ArcFace crops (resize/normalise included), on the
same seeded batch, with the same torch thread count. Rows are timed round-robin ``--rounds`` times and each
row's best round is kept, so a neighbour's load on a shared box hits every row alike.

  .venv/bin/python benchmarks/student_cost.py --student tiny_cnn:64 --student mobilefacenet_student:64 \
      --artifact .bench/distill/tiny_cnn-64 ...   # trained artifacts are measured as shipped

Writes docs/results/student_cost.json (and prints a markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from froq_ray.distill.artifact import load_student_artifact
from froq_ray.distill.cost import count_flops, count_params, cpu_images_per_second
from froq_ray.distill.serving import student_runner
from froq_ray.distill.students import build_student
from froq_ray.models import load_model
from froq_ray.quality.accelerate import frozen_copy
from froq_ray.quality.artifact import load_artifact
from froq_ray.quality.observer import network_input
from froq_ray.quality.perturbations import PerturbationSettings, PseudoLabeler
from froq_ray.quality.scorer import FroqScorer, check_batch

MFN = "../shared/models/mobilefacenet/mobilefacenet.pt"
CALIBRATION = "docs/results/mobilefacenet-lfw-folds123-sample300.calibration.json"


@dataclass
class Row:
    name: str
    params: int
    flops: int
    run: Callable[[torch.Tensor], object]
    batch: torch.Tensor
    best: float = 0.0


def student_row(name: str, network, crops: torch.Tensor) -> Row:
    """Timed as annotate runs it (froq_ray.distill.serving: memory_format auto, like the teacher FROQ row)."""
    from froq_ray.imaging.prepare import ModelInputTransform

    params, flops = count_params(network), count_flops(network, network.input_size)
    run = student_runner(network, ModelInputTransform(network.contract, crops.shape[1]), "cpu", len(crops))
    return Row(name, params, flops, lambda b: run(b.numpy()), crops)


def students(specs: list[str], artifacts: list[str], crops: torch.Tensor) -> list[Row]:
    rows = []
    for uri in artifacts:
        student = load_student_artifact(uri)
        folder = Path(uri.rstrip("/"))
        label = (
            folder.parent.name if folder.name == "artifact" else folder.name
        )  # distill_lfw.sh: <run>/artifact
        rows.append(
            student_row(
                f"student {student.arch}@{student.network.input_size} ({label})", student.network, crops
            )
        )
    for spec in specs:
        arch, size, *opts = spec.split(":")
        options = dict(o.split("=", 1) for o in opts)
        options = {k: int(v) if v.isdigit() else v for k, v in options.items()}
        torch.manual_seed(0)
        rows.append(
            student_row(f"student {arch}@{size} (untrained)", build_student(arch, int(size), options), crops)
        )
    return rows


def teacher_rows(crops: torch.Tensor, pl_images: int) -> list[Row]:
    model = load_model("mobilefacenet", MFN)
    artifact = load_artifact(CALIBRATION)
    mfn_flops = count_flops(model.network, model.contract.size)
    scorer = FroqScorer(model, artifact, memory_format="auto")
    labeler_net = frozen_copy(model.network, check_batch(model.contract.size, "cpu"))
    settings = PerturbationSettings()
    labeler = PseudoLabeler(labeler_net, model.contract, settings)
    transform = model.input_transform()
    copies = labeler.copies_per_image((3, 112, 112))
    pl_batch = crops[:pl_images]
    return [
        Row(
            "teacher FROQ (MobileFaceNet, quality + embedding)",
            sum(p.numel() for p in model.network.parameters()),
            mfn_flops,
            lambda b: scorer.score(b.numpy()),
            crops,
        ),
        Row(
            f"pseudo-label teacher ({copies} perturbed passes + 1)",
            sum(p.numel() for p in model.network.parameters()),
            mfn_flops * (copies + 1),
            lambda b: labeler(network_input(b, transform, torch.device("cpu"))),
            pl_batch,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--student", action="append", default=[], help="arch:input_size[:opt=value...], untrained"
    )
    ap.add_argument("--artifact", action="append", default=[], help="a trained student artifact folder")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pl-images", type=int, default=4, help="images per pseudo-label timing call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per row and round")
    ap.add_argument("--out", default="docs/results/student_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    crops = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (args.batch, 112, 112, 3), dtype=np.uint8)
    )
    rows = students(args.student, args.artifact, crops) + teacher_rows(crops, args.pl_images)
    for _ in range(args.rounds):
        for row in rows:
            row.best = max(row.best, cpu_images_per_second(row.run, row.batch, min_seconds=args.seconds))
    froq = next(r for r in rows if r.name.startswith("teacher FROQ"))
    pl = next(r for r in rows if r.name.startswith("pseudo-label"))
    table = [
        {
            "model": r.name,
            "params": r.params,
            "mflops_per_image": round(r.flops / 1e6, 1),
            "cpu_images_per_s": round(r.best, 1),
            "speedup_vs_teacher_froq": round(r.best / froq.best, 2),
            "speedup_vs_pseudo_label": round(r.best / pl.best, 1),
        }
        for r in rows
    ]
    print("| model | params | MFLOPs/image | CPU images/s | x teacher FROQ | x pseudo-label teacher |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for t in table:
        print(
            f"| {t['model']} | {t['params']:,} | {t['mflops_per_image']:,} | {t['cpu_images_per_s']:,} | "
            f"{t['speedup_vs_teacher_froq']} | {t['speedup_vs_pseudo_label']} |"
        )
    report = {
        "rows": table,
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
            "loadavg_at_end": list(os.getloadavg()),
        },
        "torch": torch.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
