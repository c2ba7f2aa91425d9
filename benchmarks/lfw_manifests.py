"""Write CSV input manifests (path, identity) of LFW-dev subsets, for `froq calibrate/annotate --input x.csv`.

  folds:  every image of the identities that appear in the given pairs.txt folds (identities are disjoint
          between folds), e.g. --folds 1,2,3 for calibration and --folds 4,5 for evaluation;
  sample: a seeded random sample of n images of the whole tree.
--root may point at a copy of the tree (e.g. a degraded copy made by benchmarks/make_degraded.py);
--only-degraded then keeps the images that copy actually degraded (its degradations.csv): the others are
byte-identical to the clean originals, so their per-image results can be taken from a run on the clean tree.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pandas as pd

from froq_ray.evaluation.pairs import read_lfw_pairs
from froq_ray.imaging.folder import list_identity_folder


def fold_identities(pairs_file: Path, images_root: Path, folds: list[int]) -> set[str]:
    pairs = read_lfw_pairs(pairs_file, images_root)
    chosen = pairs[pairs["fold"].isin(folds)]
    return {Path(p).parent.name for p in list(chosen["path_a"]) + list(chosen["path_b"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", default="../shared/data/lfw-dev", help="LFW-dev folder (pairs.txt, images/)")
    ap.add_argument("--root", help="image tree to list (default: <lfw>/images)")
    ap.add_argument("--folds", help="comma-separated pairs.txt folds")
    ap.add_argument("--sample", type=int, help="number of images to sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only-degraded", action="store_true", help="keep images degraded in --root's copy")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    lfw = Path(args.lfw)
    root = Path(args.root or lfw / "images").resolve()
    tree = list_identity_folder(root)
    rows = pd.DataFrame({"path": [str(root / p) for p in tree.paths], "identity": tree.identities})
    if args.folds:
        keep = fold_identities(lfw / "pairs.txt", lfw / "images", [int(f) for f in args.folds.split(",")])
        rows = rows[rows["identity"].isin(keep)]
    if args.only_degraded:
        degraded = pd.read_csv(root / "degradations.csv")
        changed = {str(root / p) for p in degraded.loc[degraded["degraded"] == 1, "relpath"]}
        rows = rows[rows["path"].isin(changed)]
    if args.sample:
        rows = rows.iloc[sorted(random.Random(args.seed).sample(range(len(rows)), args.sample))]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(args.out, index=False)
    print(f"{args.out}: {len(rows)} images of {rows['identity'].nunique()} identities")


if __name__ == "__main__":
    main()
