"""Write a seeded, degraded copy of an identity-foldered image tree and print what was applied.

Example (the degraded LFW-dev copy used by the accuracy report):

    .venv/bin/python benchmarks/make_degraded.py --src ../shared/data/lfw-dev/images \
        --dst .bench/lfw-dev-degraded/images --seed 0 --fraction 0.5

The tree keeps relative paths and file names; ``<dst>/degradations.csv`` lists every image with the kind and
parameters applied (see ``froq_ray.imaging.degrade.degrade_folder``). Same seed -> byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence

from froq_ray.imaging.degrade import ALL_KINDS, DEFAULT_KINDS, FolderSummary, degrade_folder, records_of


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="source image tree (identity folders)")
    parser.add_argument("--dst", required=True, help="destination folder (must be empty or absent)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.5, help="fraction of images to degrade")
    parser.add_argument(
        "--kinds",
        default=",".join(DEFAULT_KINDS),
        help=f"comma-separated kinds from {','.join(ALL_KINDS)} (default: %(default)s)",
    )
    parser.add_argument("--count", type=int, default=1, help="kinds applied to each degraded image")
    parser.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="KIND=LOW,HIGH",
        help="override a severity range, e.g. blur=1.5,4 (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty destination")
    return parser.parse_args(argv)


def parse_ranges(items: Sequence[str]) -> dict[str, tuple[float, float]]:
    ranges = {}
    for item in items:
        kind, _, bounds = item.partition("=")
        low, _, high = bounds.partition(",")
        try:
            ranges[kind.strip()] = (float(low), float(high))
        except ValueError:
            raise SystemExit(f"--range expects KIND=LOW,HIGH, got {item!r}") from None
    return ranges


def summary_table(summary: FolderSummary) -> str:
    """Per kind: images, and per parameter its min and max over the degraded images."""
    counts: dict[str, int] = defaultdict(int)
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in summary.rows:
        for record in records_of(row):
            counts[record.kind] += 1
            for name, value in record.params.items():
                if name != "seed":
                    values[(record.kind, name)].append(float(value))
    lines = [f"{'kind':<10} {'images':>7}  {'parameter':<9} {'min':>8} {'max':>8}"]
    for kind in sorted(counts):
        params = sorted(name for k, name in values if k == kind)
        for i, name in enumerate(params):
            vals = values[(kind, name)]
            head = f"{kind:<10} {counts[kind]:>7}" if i == 0 else " " * 18
            lines.append(f"{head}  {name:<9} {min(vals):>8.3g} {max(vals):>8.3g}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    start = time.perf_counter()
    summary = degrade_folder(
        args.src,
        args.dst,
        seed=args.seed,
        fraction=args.fraction,
        kinds=kinds,
        count=args.count,
        ranges=parse_ranges(args.range),
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    print(
        f"degraded {summary.degraded} of {summary.images} images (fraction {args.fraction}, seed {args.seed}, "
        f"kinds {','.join(kinds)}, {args.count} per image); {summary.files - summary.images} other files copied"
    )
    print(summary_table(summary))
    for row in summary.errors:
        print(f"unreadable, copied unchanged: {row.relpath}: {row.error}")
    print(f"wrote {args.dst} and {summary.csv_path} in {seconds:.1f} s")
    print(json.dumps({"images": summary.images, "degraded": summary.degraded, "errors": len(summary.errors)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
