"""Evaluate per-image quality scores on a labelled embedding set: all pairs -> one EDC per method -> a table.

Every pair from :func:`all_pairs_similarity` is used (genuine and impostor; impostors are sampled only above
``EXHAUSTIVE_PAIR_LIMIT`` pairs). The pairs are streamed once: each block contributes its similarities, its
genuine flags and, per method, its pair quality ``min(q_a, q_b)``, computed from the block's own indices. The
pair quality is kept as the dense rank of the image quality (uint16 up to 65,536 distinct values, else
uint32; equal qualities share a rank), which orders pairs exactly as the float values do in a quarter or half
of the memory. Higher quality = better: the lowest pair qualities are discarded first; pairs of equal quality
keep the order of the stream (tile by tile, row-major within a tile), which is what the EDC's stable cut sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .edc import EdcOptions, EdcResult, edc
from .pairs import DEFAULT_SAMPLED_IMPOSTORS, CollectedPairs, all_pairs_similarity, plan_pairs
from .uncertainty import bootstrap_band


def quality_ranks(quality: np.ndarray, name: str = "quality") -> np.ndarray:
    """Dense ranks of per-image qualities (0 = lowest; equal values, equal rank), as uint16 when there are at
    most 65,536 distinct values, else uint32."""
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(q)):
        raise ValueError(f"{name}: {int((~np.isfinite(q)).sum())} qualities are NaN or infinite")
    values, ranks = np.unique(q, return_inverse=True)
    return ranks.astype(np.uint16 if values.size <= 2**16 else np.uint32).reshape(-1)


def collect_pairs(
    embeddings: np.ndarray,
    identities: Sequence | np.ndarray,
    qualities: Mapping[str, np.ndarray],
    *,
    block: int = 2048,
    impostors: str = "auto",
    n_impostors: int = DEFAULT_SAMPLED_IMPOSTORS,
    seed: int = 0,
    keep_identities: bool = False,
) -> CollectedPairs:
    """Stream the pairs once into preallocated arrays (no list of pair indices is ever kept; with
    ``keep_identities`` the identity code (int32, sorted-label order) of each pair's two images is)."""
    n_images = len(embeddings)
    ranks = {}
    for name, quality in qualities.items():
        ranks[name] = quality_ranks(quality, name)
        if ranks[name].size != n_images:
            raise ValueError(f"{name}: {ranks[name].size} qualities for {n_images} images")
    plan = plan_pairs(identities, impostors, n_impostors)
    similarity = np.empty(plan.n_pairs, dtype=np.float64)
    genuine = np.empty(plan.n_pairs, dtype=bool)
    pair_rank = {name: np.empty(plan.n_pairs, dtype=rank.dtype) for name, rank in ranks.items()}
    labels, inverse = np.unique(np.asarray(identities, dtype=object).astype(str), return_inverse=True)
    codes = inverse.astype(np.int32).reshape(-1)
    size = plan.n_pairs if keep_identities else 0
    id_a, id_b = np.empty(size, np.int32), np.empty(size, np.int32)
    filled = 0
    blocks = all_pairs_similarity(
        embeddings, identities, block, impostors=impostors, n_impostors=n_impostors, seed=seed
    )
    for blk in blocks:
        stop = filled + blk.sim.size
        similarity[filled:stop] = blk.sim
        genuine[filled:stop] = blk.genuine
        for name, rank in ranks.items():
            np.minimum(rank[blk.i], rank[blk.j], out=pair_rank[name][filled:stop])
        if keep_identities:
            id_a[filled:stop], id_b[filled:stop] = codes[blk.i], codes[blk.j]
        filled = stop
    if filled != plan.n_pairs:
        raise RuntimeError(f"pair stream yielded {filled} pairs, plan said {plan.n_pairs}")
    if not keep_identities:
        return CollectedPairs(similarity, genuine, pair_rank, plan)
    return CollectedPairs(similarity, genuine, pair_rank, plan, id_a, id_b, labels.size)


def compute_edc_curves(
    embeddings: np.ndarray,
    identities: Sequence | np.ndarray,
    qualities: Mapping[str, np.ndarray],
    fmr: float | None = None,
    *,
    options: EdcOptions | None = None,
    block: int = 2048,
    impostors: str = "auto",
    n_impostors: int = DEFAULT_SAMPLED_IMPOSTORS,
    seed: int = 0,
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    **edc_options: Any,
) -> dict[str, EdcResult]:
    """One :class:`EdcResult` per quality method, all over the same pairs.

    The EDC options are ``options`` (:class:`~froq_ray.evaluation.edc.EdcOptions`, default all defaults) with
    ``fmr`` (when given) and any other of its fields given by name (``threshold=``, ``sampling=``, ``step=``,
    ``limits=``, ``ties=``, ``integration=``) replacing it, as in ``edc``: an unknown name is a ``TypeError``, a
    bad value a ``ValueError`` (before any pair is formed). ``block``, ``impostors``, ``n_impostors``, ``seed``:
    how the pairs are formed (:func:`collect_pairs`). ``bootstrap`` > 0 also sets each result's ``band``
    (:func:`~froq_ray.evaluation.uncertainty.bootstrap_band`: that many identity-bootstrap replicates, seeded
    ``bootstrap_seed``; grid sampling and stable ties only)."""
    if fmr is not None:
        edc_options["fmr"] = fmr
    opts = EdcOptions.of(options, **edc_options)
    pairs = collect_pairs(
        embeddings,
        identities,
        qualities,
        block=block,
        impostors=impostors,
        n_impostors=n_impostors,
        seed=seed,
        keep_identities=bootstrap > 0,
    )
    results = {}
    for name in qualities:
        results[name] = edc(
            pairs.similarity,
            pairs.genuine,
            pairs.pair_rank[name] if bootstrap else pairs.pair_rank.pop(name),
            opts,
        )
        results[name].settings["impostors_sampled"] = pairs.plan.impostors_sampled
    if bootstrap:
        bands = bootstrap_band(pairs, results, replicates=bootstrap, seed=bootstrap_seed)
        for name, band in bands.items():
            results[name].band = band
    return results


def results_table(results: Mapping[str, EdcResult]) -> pd.DataFrame:
    """One row per method: FNMR(0), tau, pair counts, normalised and raw pAUC (and above-ideal area) per L, and
    with a bootstrap band the 2.5 / 97.5 percentiles of the normalised pAUC (``pauc_lo@L``, ``pauc_hi@L``)."""
    rows = []
    for name, res in results.items():
        row = {
            "method": name,
            "fnmr0": res.fnmr0,
            "tau": res.tau,
            "n_genuine": res.n_genuine,
            "n_impostor": res.n_impostor,
        }
        for limit, value in sorted(res.pauc.items()):
            row[f"pauc@{limit:g}"] = value.normalised
        for limit, value in sorted(res.pauc.items()):
            row[f"pauc_raw@{limit:g}"] = value.raw
        for limit, value in sorted(res.pauc.items()):
            row[f"above_ideal@{limit:g}"] = value.above_ideal
        if res.band is not None:
            for limit in sorted(res.pauc):
                row[f"pauc_lo@{limit:g}"] = res.band.pauc_lo[limit]
                row[f"pauc_hi@{limit:g}"] = res.band.pauc_hi[limit]
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_quality_scores(
    embeddings: np.ndarray,
    identities: Sequence | np.ndarray,
    qualities: Mapping[str, np.ndarray],
    fmr: float | None = None,
    **options: Any,
) -> pd.DataFrame:
    """The EDC table of several quality methods on one labelled embedding set (options: ``compute_edc_curves``)."""
    return results_table(compute_edc_curves(embeddings, identities, qualities, fmr, **options))


_HEADERS = {
    "method": "Method",
    "fnmr0": "FNMR(0)",
    "tau": "tau",
    "n_genuine": "genuine pairs",
    "n_impostor": "impostor pairs",
    # one column per discard limit L, named "<key>@L"
    "pauc": "pAUC@{} (norm.)",
    "pauc_raw": "raw pAUC@{}",
    "pauc_lo": "95% band lo@{}",
    "pauc_hi": "95% band hi@{}",
    "above_ideal": "above ideal@{}",
}


def _header(column: str) -> str:
    key, at, limit = column.partition("@")
    template = _HEADERS.get(key)
    if template is None or bool(at) != ("{}" in template):
        return column
    return template.format(limit)


def _cell(value, digits: int) -> str:
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "nan" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def edc_markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub markdown table of ``results_table`` output (all columns but the above-ideal areas by default)."""
    cols = (
        list(columns) if columns is not None else [c for c in df.columns if not c.startswith("above_ideal@")]
    )
    lines = [
        "| " + " | ".join(_header(c) for c in cols) + " |",
        "|" + "|".join("---" if c == "method" else "---:" for c in cols) + "|",
    ]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"
