"""Label-noise flags and CR as a quality score on LFW-dev with MobileFaceNet embeddings.

1. Embed all LFW-dev crops once (``embed_crops``), cached as ``.bench/lfw-mfn-embeddings.npy`` (+ paths).
2. Swap the labels of a seeded 5% of images to another identity (uniform over the other identities), compute
   CCS/NNCCS/CR from the noisy labels, flag label noise at the default filter setting; report precision and
   recall against the swapped set (and, for context, at a few other settings).
3. EDC pAUC (``compute_edc_curves``, identities = TRUE labels) of CR computed from the TRUE labels, beside
   FROQ quality: per-image FROQ from a finished calibrate run's ``layer_norms`` (mean of its selected layers),
   else the artifact ``--froq-artifact`` applied with ``FroqScorer`` (the JSON says which).

    nice -n 19 .venv/bin/python benchmarks/label_noise_lfw.py      # writes docs/results/label_noise_lfw.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from froq_ray.config import LabelNoisePolicy
from froq_ray.curation.classifiability import classifiability
from froq_ray.curation.label_noise import flag_label_noise
from froq_ray.evaluation.protocol import compute_edc_curves, edc_markdown_table, results_table
from froq_ray.imaging.folder import list_identity_folder, load_crops_strict
from froq_ray.models import load_model
from froq_ray.models.inference import embed_crops

SHARED = REPO_ROOT.parent / "shared"
DEFAULT_IMAGES = SHARED / "data" / "lfw-dev" / "images"
DEFAULT_WEIGHTS = SHARED / "models" / "mobilefacenet" / "mobilefacenet.pt"
BENCH = REPO_ROOT / ".bench"
DEFAULT_CALIBRATE_RUN = BENCH / "cal-mfn-lfw-all"
DEFAULT_FROQ_ARTIFACT = Path("docs/results/mobilefacenet-lfw-folds123-sample300.calibration.json")
DEFAULT_OUT = REPO_ROOT / "docs" / "results" / "label_noise_lfw.json"
SWEEP = [(None, 0.0), (0.2, None), (0.2, 0.0), (0.1, 0.0), (0.3, 0.0), (None, 0.05), (None, -0.05)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--noise-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--calibrate-run",
        type=Path,
        default=DEFAULT_CALIBRATE_RUN,
        help="a finished calibrate output over these images (per-image layer_norms)",
    )
    p.add_argument(
        "--froq-artifact",
        type=Path,
        default=DEFAULT_FROQ_ARTIFACT,
        help="used with FroqScorer when --calibrate-run is not finished",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--embed-only", action="store_true", help="only fill the embedding cache")
    p.add_argument(
        "--write-annotations",
        type=Path,
        default=BENCH / "lfw-mfn-noisy-annotations",
        help="also write the noisy-label set as an annotation Parquet for `froq filter`",
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- inputs
def cached_embeddings(images: Path, weights: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(relative paths, true identities, MobileFaceNet embeddings (N, 128)), embedded once and cached."""
    listing = list_identity_folder(images)
    BENCH.mkdir(exist_ok=True)
    emb_file, paths_file = BENCH / "lfw-mfn-embeddings.npy", BENCH / "lfw-mfn-embeddings.paths.json"
    if emb_file.exists() and paths_file.exists() and json.loads(paths_file.read_text()) == listing.paths:
        return listing.paths, listing.identities, np.load(emb_file)
    model = load_model("mobilefacenet", str(weights))
    start = time.perf_counter()
    crops = load_crops_strict(listing.absolute_paths())
    embeddings = embed_crops(model, crops, batch_size=64)
    print(f"embedded {len(listing)} crops in {time.perf_counter() - start:.1f} s")
    np.save(emb_file, embeddings)
    paths_file.write_text(json.dumps(listing.paths))
    return listing.paths, listing.identities, embeddings


def swap_labels(identities: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, swapped mask): a seeded ``fraction`` of images relabelled to another identity drawn
    uniformly from the other identities present."""
    labels = np.asarray(identities, dtype=object)
    names = np.unique(labels.astype(str))
    rng = np.random.default_rng(seed)
    count = round(fraction * labels.size)
    chosen = rng.choice(labels.size, size=count, replace=False)
    noisy = labels.copy()
    for i in chosen:
        others = names[names != labels[i]]
        noisy[i] = others[rng.integers(others.size)]
    swapped = np.zeros(labels.size, dtype=bool)
    swapped[chosen] = True
    return noisy, swapped


def froq_quality(
    paths: list[str], images: Path, weights: Path, run: Path, artifact: Path
) -> tuple[np.ndarray, str]:
    """Per-image FROQ quality aligned with ``paths`` and a sentence saying where it came from."""
    cal_json = run / "_froq" / "calibration.json"
    if cal_json.exists() and any(run.glob("part-*.parquet")):
        return froq_from_calibrate_run(paths, images, run)
    return froq_from_artifact(paths, images, weights, artifact)


def froq_from_calibrate_run(paths: list[str], images: Path, run: Path) -> tuple[np.ndarray, str]:
    import pandas as pd

    art = json.loads((run / "_froq" / "calibration.json").read_text())
    layers, selected = list(art["utilities"]), art["selected_layers"]
    columns = [layers.index(name) for name in selected]
    frame = pd.read_parquet(run, columns=["path", "status", "layer_norms"])
    frame = frame[frame["status"] == "ok"]
    norms = np.stack(frame["layer_norms"].to_numpy())[:, columns].mean(axis=1)
    by_path = dict(zip((str(Path(p).relative_to(images)) for p in frame["path"]), norms, strict=True))
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise RuntimeError(f"{len(missing)} images have no layer_norms in {run}")
    source = (
        f"FROQ from the finished calibrate run {run} (calibration_id {art['calibration_id']}, layers "
        f"{selected}, calibrated on {art['calibration_set']['size']} images): mean of the selected layers' "
        "per-image norms"
    )
    return np.array([by_path[p] for p in paths], dtype=np.float64), source


def froq_from_artifact(
    paths: list[str], images: Path, weights: Path, artifact: Path
) -> tuple[np.ndarray, str]:
    from froq_ray.quality.artifact import load_artifact
    from froq_ray.quality.scorer import FroqScorer

    art = load_artifact(artifact)
    cache = BENCH / f"lfw-mfn-froq-{art.calibration_id}.npy"  # keyed by the artifact: never a stale score
    source = (
        f"FROQ from artifact {artifact} (calibration_id {art.calibration_id}, layers {art.selected_layers}, "
        f"calibrated on {art.calibration_set.size} images) applied with FroqScorer"
    )
    if cache.exists():
        return np.load(cache), source
    model = load_model("mobilefacenet", str(weights))
    scorer = FroqScorer(model, art, model_batch_size=64)
    crops = load_crops_strict([images / p for p in paths])
    quality = np.concatenate([scorer.score(crops[i : i + 256]).quality for i in range(0, len(crops), 256)])
    np.save(cache, quality)
    return quality.astype(np.float64), source


def write_noisy_annotations(
    folder: Path,
    paths: list[str],
    images: Path,
    noisy: np.ndarray,
    swapped: np.ndarray,
    embeddings: np.ndarray,
    froq: np.ndarray,
) -> None:
    """The noisy-label set in the annotate output schema (one part file) so that `froq filter` can run on it;
    ``swapped.npy`` beside it records the ground truth."""
    import pyarrow.parquet as pq

    from froq_ray.storage.schema import annotation_schema, to_table

    n = len(paths)
    columns = {
        "path": [str(images / p) for p in paths],
        "identity": list(noisy),
        "status": ["ok"] * n,
        "error": [None] * n,
        "quality": froq.astype(np.float32),
        "embedding": embeddings,
        "width": [112] * n,
        "height": [112] * n,
        "model_id": ["mobilefacenet"] * n,
        "calibration_id": [None] * n,
    }
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(columns, annotation_schema(embeddings.shape[1])), folder / "part-00000.parquet")
    np.save(folder.parent / f"{folder.name}.swapped.npy", swapped)


# --------------------------------------------------------------------------------------------- analysis
def precision_recall(flags: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    tp = int((flags & truth).sum())
    return {
        "flagged": int(flags.sum()),
        "true_positives": tp,
        "precision": tp / int(flags.sum()) if flags.any() else float("nan"),
        "recall": tp / int(truth.sum()) if truth.any() else float("nan"),
    }


def ambiguous_false_positives(noisy: np.ndarray, swapped: np.ndarray, flags: np.ndarray) -> dict[str, Any]:
    """False positives that no centre rule can avoid: the one clean image of a (noisy-label) identity of
    exactly two images whose other image was swapped in (or the pair's clean partner): both then have the same
    CCS (the cosine between them), so a flag on the swapped one flags its partner too."""
    labels = noisy.astype(str)
    names, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    has_swapped = np.bincount(inverse, weights=swapped.astype(float), minlength=names.size) > 0
    ambiguous = flags & ~swapped & (sizes[inverse] == 2) & has_swapped[inverse]
    false_positives = int((flags & ~swapped).sum())
    true_positives = int((flags & swapped).sum())
    resolvable = int(flags.sum()) - int(ambiguous.sum())
    return {
        "false_positives": false_positives,
        "in_two_image_identities_with_a_swapped_image": int(ambiguous.sum()),
        "precision_without_them": true_positives / resolvable if resolvable else float("nan"),
    }


def clean_flags(embeddings: np.ndarray, identities: list[str]) -> dict[str, int]:
    """The default rules on the TRUE labels: what they flag when nothing was swapped."""
    scores = classifiability(embeddings, identities)
    default = LabelNoisePolicy()
    flags = flag_label_noise(scores.ccs, scores.nnccs, default.ccs_floor, default.margin).flagged
    return {"flagged": int(flags.sum()), "images_with_defined_ccs": int(np.isfinite(scores.ccs).sum())}


def noise_detection(embeddings: np.ndarray, noisy: np.ndarray, swapped: np.ndarray) -> dict[str, Any]:
    scores = classifiability(embeddings, noisy)
    default = LabelNoisePolicy()
    flags_default = flag_label_noise(scores.ccs, scores.nnccs, default.ccs_floor, default.margin).flagged
    result: dict[str, Any] = {
        "default_setting": {"ccs_floor": default.ccs_floor, "margin": default.margin},
        "default": precision_recall(flags_default, swapped),
        "swapped": int(swapped.sum()),
        "ambiguous_false_positives": ambiguous_false_positives(noisy, swapped, flags_default),
        "swapped_with_undefined_ccs": int((swapped & np.isnan(scores.ccs)).sum()),
        "images_with_undefined_ccs": int(np.isnan(scores.ccs).sum()),
        "sweep": [],
    }
    for floor, margin in SWEEP:
        flags = flag_label_noise(scores.ccs, scores.nnccs, floor, margin).flagged
        result["sweep"].append({"ccs_floor": floor, "margin": margin, **precision_recall(flags, swapped)})
    return result


def edc_comparison(embeddings: np.ndarray, identities: list[str], froq: np.ndarray) -> tuple[list, str, dict]:
    """EDC table of FROQ and CR (true labels); singleton images have no CR, so the comparison runs on the
    images of identities with >= 2 images (both methods on the same pairs)."""
    scores = classifiability(embeddings, identities)
    defined = np.isfinite(scores.cr)
    ids = np.asarray(identities, dtype=object)[defined]
    curves = compute_edc_curves(
        embeddings[defined],
        ids,
        {
            "FROQ": froq[defined],
            "CR (true labels)": scores.cr[defined].astype(np.float64),
            "CCS (true labels)": scores.ccs[defined].astype(np.float64),
        },
    )
    table = results_table(curves)
    subset = {
        "images": int(defined.sum()),
        "identities": int(np.unique(ids.astype(str)).size),
        "singleton_images_left_out": int((~defined).sum()),
    }
    return json.loads(table.to_json(orient="records")), edc_markdown_table(table), subset


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    paths, identities, embeddings = cached_embeddings(args.images, args.weights)
    print(f"{len(paths)} images, {len(set(identities))} identities, embeddings {embeddings.shape}")
    if args.embed_only:
        return 0
    noisy, swapped = swap_labels(identities, args.noise_fraction, args.seed)
    detection = noise_detection(embeddings, noisy, swapped)
    detection["default_on_clean_labels"] = clean_flags(embeddings, identities)
    froq, froq_source = froq_quality(paths, args.images, args.weights, args.calibrate_run, args.froq_artifact)
    edc_rows, markdown, subset = edc_comparison(embeddings, identities, froq)
    if args.write_annotations:
        write_noisy_annotations(args.write_annotations, paths, args.images, noisy, swapped, embeddings, froq)
    report = {
        "data": {
            "images": len(paths),
            "identities": len(set(identities)),
            "embedding": "mobilefacenet 128-d",
        },
        "label_noise": {"fraction": args.noise_fraction, "seed": args.seed, **detection},
        "edc": {
            "froq_source": froq_source,
            "subset": subset,
            "identities": "true labels",
            "results": edc_rows,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    d = detection["default"]
    print(
        f"label noise: {detection['swapped']} swapped; default {detection['default_setting']}: flagged "
        f"{d['flagged']}, precision {d['precision']:.3f}, recall {d['recall']:.3f}"
    )
    for row in detection["sweep"]:
        print(
            f"  ccs_floor={row['ccs_floor']} margin={row['margin']}: flagged {row['flagged']}, "
            f"precision {row['precision']:.3f}, recall {row['recall']:.3f}"
        )
    clean = detection["default_on_clean_labels"]
    print(f"  clean labels: default flags {clean['flagged']} of {clean['images_with_defined_ccs']} images")
    amb = detection["ambiguous_false_positives"]
    print(
        f"  false positives {amb['false_positives']}, of which "
        f"{amb['in_two_image_identities_with_a_swapped_image']} are the partner of a swapped image in a "
        "2-image identity; precision without them "
        f"{amb['precision_without_them']:.3f}"
    )
    print(froq_source)
    print(f"EDC subset: {subset}")
    print(markdown)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
