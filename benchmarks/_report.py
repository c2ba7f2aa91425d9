"""Pieces shared by the LFW-dev accuracy reports (froq_accuracy_report, froq_observer_report, distill_report):
the folds' identities, the per-split record of the results JSON, writing that JSON, and the markdown section
of one evaluation split."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from froq_ray.evaluation.protocol import edc_markdown_table


def fold_identities(lfw: Path, folds: Sequence[int]) -> set[str]:
    """Identity names of the LFW-dev folder ``lfw`` (``pairs.txt``, ``images/``) that appear in the pairs.txt
    ``folds`` (1-based)."""
    from benchmarks.lfw_manifests import fold_identities as ids

    return ids(lfw / "pairs.txt", lfw / "images", list(folds))


def split_record(table: pd.DataFrame, images: int, identities: int, **extra: object) -> dict:
    """The results-JSON entry of one evaluation split: ``images`` and ``identities`` counts, ``extra`` entries,
    then the ``results_table`` rows as JSON records (column name -> value) under ``table``."""
    return {
        "images": images,
        "identities": identities,
        **extra,
        "table": json.loads(table.to_json(orient="records")),
    }


def write_results(path: Path, report: dict) -> None:
    """Write ``report`` to ``path`` as indented JSON (numpy scalars as floats), creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")


def split_section(
    report: dict,
    split: str,
    table: pd.DataFrame,
    heading: str,
    columns: Sequence[str],
    caption: str,
    *,
    detail: str = "",
    blank_before_caption: bool = True,
) -> list[str]:
    """Markdown lines of one evaluation split: the heading ``{heading}, {split} ({images} images, {identities}
    identities{detail})`` with the counts of ``report["splits"][split]`` (a :func:`split_record`), the EDC
    ``table`` (``columns`` of it), then ``caption`` (after a blank line unless ``blank_before_caption`` is
    false) and a blank line. Raises KeyError when the report has no such split."""
    info = report["splits"][split]
    return [
        f"{heading}, {split} ({info['images']} images, {info['identities']} identities{detail})",
        "",
        edc_markdown_table(table, columns=columns),
        *([""] if blank_before_caption else []),
        caption,
        "",
    ]
