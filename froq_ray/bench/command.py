"""``python jobs/benchmark.py``: command-line front of :mod:`froq_ray.bench.throughput`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..vocabulary import DEVICES, PRECISIONS
from .throughput import PHASES, BenchSettings, run_benchmark, table, write_result

EXAMPLES = """examples:
  python jobs/benchmark.py --arch adaface_ir101 --n 2000 --device auto --out docs/results/throughput_h100.json
  python jobs/benchmark.py --arch mobilefacenet --weights ../shared/models/mobilefacenet/mobilefacenet.pt \\
      --n 256 --device cpu --out docs/results/throughput_cpu_mobilefacenet.json
"""


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _crops(text: str) -> int:
    """An argparse type for ``--n``: at least 2 crops (a quick calibration ranks layers across the crops)."""
    value = _positive(text)
    if value < 2:
        raise argparse.ArgumentTypeError("must be >= 2 (the quick calibration ranks layers across the crops)")
    return value


def _phases(text: str) -> tuple[str, ...]:
    """An argparse type: a comma list of phase names (:data:`PHASES`)."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(set(names) - set(PHASES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {', '.join(unknown)}; known: {','.join(PHASES)}")
    return names


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="benchmark",
        description="FROQ reference loop vs froq_ray annotate through Ray Data, in one run: one table + JSON.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--arch", default="adaface_ir101", help="registry model name (default adaface_ir101)")
    ap.add_argument(
        "--weights", help="weights file; default: seeded random weights when the model needs a file"
    )
    ap.add_argument("--n", type=_crops, default=2000, help="JPEG crops to generate and score")
    ap.add_argument("--device", choices=list(DEVICES), default="auto")
    ap.add_argument(
        "--precision",
        choices=["auto", *PRECISIONS],
        default="auto",
        help="froq_ray path precision; auto = bf16 on CUDA, fp32 on CPU (the reference loop is fp32)",
    )
    ap.add_argument(
        "--reference-workers", type=_ints, help="comma list of DataLoader workers (default 0,<cores>)"
    )
    ap.add_argument("--ray-batch-size", type=_positive)
    ap.add_argument(
        "--model-batch-size", type=_positive, help="images per forward (default 512 on CUDA, 64 on CPU)"
    )
    ap.add_argument(
        "--pl-n", type=_positive, help="images for the pseudo-label phase (default n/8, 16..4096)"
    )
    ap.add_argument(
        "--artifact", help="calibration artifact for the model (default: built-in or a quick one)"
    )
    ap.add_argument("--source-dir", help="re-encode real crops from this folder instead of synthetic faces")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="add a torch.compile scorer variant")
    ap.add_argument("--bf16-on-cpu", action="store_true", help="add bf16 scorer variants on a CPU run")
    ap.add_argument(
        "--skip", type=_phases, default=(), help=f"comma list of phases to skip: {','.join(PHASES)}"
    )
    ap.add_argument(
        "--num-cpus", type=_positive, help="CPUs for Ray and the reference workers (default: all)"
    )
    ap.add_argument("--work-dir", help="keep crops and outputs here (default: a temporary folder, removed)")
    ap.add_argument("--out", help="JSON file for every number")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = BenchSettings(
        arch=args.arch,
        n=args.n,
        weights=args.weights,
        device=args.device,
        precision=args.precision,
        reference_workers=args.reference_workers,
        ray_batch_size=args.ray_batch_size,
        model_batch_size=args.model_batch_size,
        pl_n=args.pl_n,
        artifact=args.artifact,
        source_dir=args.source_dir,
        seed=args.seed,
        compile=args.compile,
        bf16_on_cpu=args.bf16_on_cpu,
        skip=args.skip,
        work_dir=args.work_dir,
    )
    if args.num_cpus:
        settings.num_cpus = args.num_cpus
    result = run_benchmark(settings)
    result["command"] = " ".join(["python jobs/benchmark.py", *(argv if argv is not None else sys.argv[1:])])
    print(table(result), flush=True)
    if args.out:
        write_result(result, args.out)
        print(f"wrote {args.out}")
    return 0
