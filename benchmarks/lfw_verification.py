"""LFW-dev verification accuracy of face-recognition models from the zoo.

Every image referenced by ``pairs.txt`` is decoded once and embedded once per model; a pair's score is the
cosine similarity of its two embeddings; accuracy is k-fold over the file's folds, each fold's threshold
chosen on the other folds (``froq_ray.evaluation.verification``). For ``dlib_resnet_v1`` the accuracy at
dlib's own rule (Euclidean distance of the raw 128-d descriptors below 0.6 means "same person"; a
distance of exactly 0.6 counts as a match here) is also reported.

    .venv/bin/python benchmarks/lfw_verification.py                      # dlib + MobileFaceNet
    .venv/bin/python benchmarks/lfw_verification.py --model mobilefacenet=/path/mobilefacenet.pt --out x.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from froq_ray.evaluation.pairs import read_lfw_pairs
from froq_ray.evaluation.verification import fixed_threshold_accuracy, kfold_accuracy
from froq_ray.imaging.folder import load_crops_strict
from froq_ray.models import load_model
from froq_ray.models.inference import embed_crops

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
DEFAULT_DATA = SHARED / "data" / "lfw-dev"
DEFAULT_MODELS = [
    "dlib_resnet_v1",
    f"mobilefacenet={SHARED / 'models' / 'mobilefacenet' / 'mobilefacenet.pt'}",
]
DEFAULT_OUT = REPO_ROOT / "docs" / "results" / "lfw_verification.json"
DLIB_MODEL = "dlib_resnet_v1"
DLIB_DISTANCE_THRESHOLD = 0.6
TARGETS = {"dlib_resnet_v1": 0.985, "mobilefacenet": 0.992}  # issue 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME[=WEIGHTS]",
        help="a zoo model, repeatable (default: dlib_resnet_v1 and MobileFaceNet)",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pairs.txt and images/")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def split_model_spec(spec: str) -> tuple[str, str | None]:
    name, _, weights = spec.partition("=")
    return name, (weights or None)


def pair_images(pairs) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Unique image paths (sorted) and, per pair, the indices of its two images in that list."""
    paths = sorted(set(pairs["path_a"]) | set(pairs["path_b"]))
    index = {p: k for k, p in enumerate(paths)}
    return paths, pairs["path_a"].map(index).to_numpy(), pairs["path_b"].map(index).to_numpy()


def cosine_per_pair(emb: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    unit = emb.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", unit[a], unit[b])


def evaluate_model(
    spec: str,
    crops: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    genuine: np.ndarray,
    folds: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, Any]:
    name, weights = split_model_spec(spec)
    model = load_model(name, weights)
    start = time.perf_counter()
    emb = embed_crops(model, crops, batch_size=args.batch_size, device=args.device)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "model": name,
        "model_id": model.model_id,
        "weights": model.weights_path,
        "weights_sha256": model.weights_sha256,
        "embedding_size": model.embedding_size,
        "embed_seconds": round(seconds, 2),
        "images_per_second": round(len(crops) / seconds, 1),
        "cosine_kfold": kfold_accuracy(cosine_per_pair(emb, a, b), genuine, folds).to_dict(),
    }
    if name == DLIB_MODEL:
        distance = np.linalg.norm(emb[a].astype(np.float64) - emb[b].astype(np.float64), axis=1)
        fixed = fixed_threshold_accuracy(-distance, genuine, folds, -DLIB_DISTANCE_THRESHOLD)
        result["euclidean_fixed_0.6"] = {
            **fixed.to_dict(),
            "per_fold_threshold": None,
            "rule": "raw descriptors, distance <= 0.6 is the same person",
        }
    if name in TARGETS:
        result["target_mean_acc"] = TARGETS[name]
        result["meets_target"] = result["cosine_kfold"]["mean_acc"] >= TARGETS[name]
    return result


def _fmt(res: dict[str, Any]) -> str:
    return f"{100 * res['mean_acc']:.2f}% | {100 * res['std_acc']:.2f}% | " + " ".join(
        f"{100 * x:.2f}" for x in res["per_fold_acc"]
    )


def format_table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | scoring | mean acc | std | per fold (%) |", "|---|---|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['model']} | cosine, k-fold threshold | {_fmt(r['cosine_kfold'])} |")
        if "euclidean_fixed_0.6" in r:
            lines.append(f"| {r['model']} | Euclidean distance <= 0.6 | {_fmt(r['euclidean_fixed_0.6'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = read_lfw_pairs(args.data / "pairs.txt", args.data / "images")
    paths, a, b = pair_images(pairs)
    genuine, folds = pairs["genuine"].to_numpy(), pairs["fold"].to_numpy()
    start = time.perf_counter()
    crops = load_crops_strict(paths)
    print(
        f"{len(pairs)} pairs, {len(paths)} images decoded in {time.perf_counter() - start:.1f} s", flush=True
    )
    results = []
    for spec in args.models or DEFAULT_MODELS:
        results.append(evaluate_model(spec, crops, a, b, genuine, folds, args))
        print(
            f"{results[-1]['model']}: {results[-1]['cosine_kfold']['mean_acc']:.4f} "
            f"({results[-1]['embed_seconds']} s to embed)",
            flush=True,
        )
    print(format_table(results))
    report = {
        "benchmark": "lfw_verification",
        "data": str(args.data),
        "n_pairs": len(pairs),
        "n_images": len(paths),
        "n_folds": int(np.unique(folds).size),
        "protocol": "cosine similarity; per fold, the threshold maximising accuracy on the other folds "
        "(midpoints between distinct scores); std is the population std over folds",
        "environment": {
            "torch": torch.__version__,
            "threads": args.threads,
            "device": args.device,
            "python": platform.python_version(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
