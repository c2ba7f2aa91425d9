"""Split an LFW-dev annotate output into an "evaluation set" and a training set, for the eval-overlap check.

The first image (``*_0001.jpg``) of every identity that has at least two images goes to ``OUT/eval``, every
other row to ``OUT/train``; both are single ``part-00000.parquet`` files in the annotate schema (rows copied
as they are). Then, for example:

    python benchmarks/lfw_eval_split.py /tmp/h8/lfw-dev-dlib /tmp/h8/split
    froq filter --config configs/filter.yaml --annotations /tmp/h8/split/train --output /tmp/h8/filter-split \\
        --set 'filter.eval_overlap.embeddings=[/tmp/h8/split/eval]'

Every identity of ``train`` whose name is in ``eval`` truly overlaps; the others do not (docs/curation.md).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("annotations", type=Path, help="an annotate output folder (part-*.parquet, with identity)")
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    table = pa.concat_tables([pq.read_table(f) for f in sorted(args.annotations.glob("part-*.parquet"))])
    identity = table.column("identity").to_pylist()
    paths = table.column("path").to_pylist()
    images = Counter(identity)
    is_eval = [images[i] >= 2 and str(p).endswith("_0001.jpg") for i, p in zip(identity, paths, strict=True)]
    for name, mask in (("eval", is_eval), ("train", [not e for e in is_eval])):
        (args.out / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pa.array(mask)), args.out / name / "part-00000.parquet")
    print(f"eval: {sum(is_eval)} images; train: {len(is_eval) - sum(is_eval)} images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
