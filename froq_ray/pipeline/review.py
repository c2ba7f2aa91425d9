"""The review job: annotations (+ a ``froq filter`` output) -> PNG contact sheets and one static HTML page.

Reads ``review.annotations`` with :mod:`froq_ray.storage.annotations` (``path``, ``status``, the quality column,
optional identity and ``quality_percentile``) and, with ``review.filter``, that filter output:
``keep_list.parquet`` (decisions, label-noise flags, nearest identity), ``summary.json`` and, when the filter
wrote them, ``duplicates.parquet`` (near-duplicate image pairs: ``path_a``, ``path_b``, optional ``cosine``) and
``identity_merges.parquet`` (suggested merges: ``identity_a``, ``identity_b``, optional ``cosine``). The
selections are :mod:`froq_ray.curation.review`; the rendering :mod:`froq_ray.curation.review_page`.

Sections of the page, in order: lowest and highest quality (``review.extremes`` images each), one per
percentile band (``review.bands``; of ``quality_percentile`` when the annotations hold it, else of this set's own
quality distribution), label-noise flags (each flagged image beside ``review.identity_samples`` images of its own
identity and of its nearest other identity), suggested identity merges and near-duplicates. A section whose
source is missing (no filter output, a filter that wrote no merges or duplicates) shows nothing and says why.

Written to ``output.uri``: ``index.html`` (thumbnails embedded as ``data:`` URIs: the page is one file, its
contact-sheet links aside), ``sheets/<section>-NN.png`` and ``_froq/manifest.json`` (counts per section, the
skipped images). Images are read through fsspec (``review.storage_options``; ``s3://`` works) and decoded like
the annotate job decodes them; one that cannot be read or decoded is a grey placeholder tile and a counted skip
(named in the log, on the page and in the manifest), never an error. Annotation rows that are not ok
(``corrupt``, ``empty``, ``not_an_image``...) or have no finite quality are in no quality section: they are
counted by status on the page ("not scored"), in the log and in the manifest (``results.not_scored``). The
same inputs and config write the same bytes (the manifest's times aside). ``output.mode`` works as for evaluate
and filter (:func:`froq_ray.storage.output.open_output`; the job has no partial state): ``resume`` does nothing
when the output holds the finished review of the same config and inputs, ``overwrite`` deletes the earlier page and
sheets first, ``error_if_exists`` refuses an output holding them.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .. import status as st
from ..config import ReviewConfig, ReviewJob
from ..curation import review as sel
from ..curation.review_page import Section, Tile, contact_sheets, html_page
from ..errors import UserError
from ..imaging.decode import decode_batch
from ..storage.annotations import KEEP_LIST, AnnotationFile, annotation_files, identities, read_table
from ..storage.fs import join_uri, open_fs, read_json, write_bytes_atomic
from ..storage.location import Location
from ..storage.manifest import read_manifest, status_counts, utc_now
from ..storage.output import OutputLayout
from ..storage.reader import read_blobs
from .inputs import concat_rows
from .outputs import already_finished, open_files_job_output, write_job_manifest

log = logging.getLogger("froq_ray")

INDEX = "index.html"
SHEETS = "sheets"
OUTPUT = OutputLayout("review", files=(INDEX, SHEETS), resumable=False, dataset_inputs=True)
"""The review job's output layout: the page and the contact sheets; no partial state worth resuming."""
PERCENTILE = "quality_percentile"
SUMMARY = "summary.json"
DUPLICATES = "duplicates.parquet"
"""Near-duplicate image pairs in a filter output: ``path_a``, ``path_b``, optional ``cosine``."""
MERGES = "identity_merges.parquet"
"""Identity-merge suggestions in a filter output: ``identity_a``, ``identity_b``, optional ``cosine``."""
FILTER_COLUMNS = ("path", "identity", "keep", "reason", "label_noise", "label_noise_rule", "ccs", "nnccs")
"""Keep-list columns the review needs (``nearest_identity`` too when present)."""
READ_BATCH = 64
"""Images read at a time (concurrently for object stores)."""
SKIPS_LISTED = 100
NOT_SCORED_EXAMPLES = 5
"""Paths named per page summary, log line and manifest for the rows the quality sections leave out."""


class ReviewInputError(UserError, ValueError):
    """The annotations or the filter output cannot be reviewed as asked; names the file, column or row."""


@dataclass(frozen=True)
class FilterOutput:
    """What the review reads of a filter output: its keep-list rows, ``summary`` (None when absent), the
    optional ``merges`` / ``duplicates`` tables (None when the filter did not write them), and the files read."""

    uri: str
    keep_list: pd.DataFrame
    summary: dict[str, Any] | None
    merges: pd.DataFrame | None
    duplicates: pd.DataFrame | None
    files: list[AnnotationFile]


# ------------------------------------------------------------------------------------------------ reading
def read_annotations(cfg: ReviewConfig, files: list[AnnotationFile]) -> pd.DataFrame:
    """``path``, ``identity``, ``status``, ``quality`` (float64) and, when annotated, ``quality_percentile`` of
    every annotation row, in file order. Raises :class:`ReviewInputError` for a missing column or a repeated
    path."""
    wanted = ["path", "status", cfg.quality_column]
    identity = [cfg.identity_column] if cfg.identity_source == "column" else []
    frames = []
    for file in files:
        table = read_table(
            file,
            [*wanted, *identity],
            [PERCENTILE],
            hint="check review.quality_column / review.identity_column",
            error=ReviewInputError,
        )
        paths = table.column("path").to_pylist()
        values = table.column(cfg.identity_column).to_pylist() if identity else None
        frame = pd.DataFrame(
            {
                "path": paths,
                "identity": identities(paths, cfg.identity_source, values),
                "status": table.column("status").to_pylist(),
                "quality": table.column(cfg.quality_column).to_pandas().astype(np.float64).to_numpy(),
            }
        )
        if PERCENTILE in table.column_names:
            frame[PERCENTILE] = table.column(PERCENTILE).to_pandas().astype(np.float64).to_numpy()
        frames.append(frame)
    return concat_rows(frames, ReviewInputError, where="in the annotations")


def read_filter_output(uri: str, storage_options: dict[str, Any]) -> FilterOutput:
    """The filter output at ``uri`` (its folder, or its ``keep_list.parquet``). Raises :class:`ReviewInputError`
    when there is no keep-list or a file lacks a needed column."""
    fs, path = open_fs(uri, storage_options)
    fs.invalidate_cache(path)
    if fs.isfile(path) and posixpath.basename(path) == KEEP_LIST:
        path, uri = posixpath.dirname(path), uri.rsplit("/", 1)[0]
    keep_path = f"{path.rstrip('/')}/{KEEP_LIST}"
    if not fs.isfile(keep_path):
        raise ReviewInputError(f"no {KEEP_LIST} in {uri}: review.filter must be a `froq filter` output")
    files = [AnnotationFile(fs, keep_path)]
    hint = "review.filter must be a `froq filter` output"
    keep = read_table(files[0], list(FILTER_COLUMNS), ["nearest_identity"], hint=hint, error=ReviewInputError)
    keep_list = keep.to_pandas()
    if "nearest_identity" not in keep_list:
        keep_list["nearest_identity"] = None
    summary = None
    if fs.isfile(f"{path}/{SUMMARY}"):
        summary = read_json(fs, f"{path}/{SUMMARY}")
        files.append(AnnotationFile(fs, f"{path}/{SUMMARY}"))
    pairs: dict[str, pd.DataFrame | None] = {}
    for name, columns in ((MERGES, sel.MERGE_COLUMNS), (DUPLICATES, sel.DUPLICATE_COLUMNS)):
        file = AnnotationFile(fs, f"{path}/{name}")
        if fs.isfile(file.path):
            pairs[name] = read_table(
                file, list(columns), [sel.COSINE], hint=hint, error=ReviewInputError
            ).to_pandas()
            files.append(file)
        else:
            pairs[name] = None
    return FilterOutput(uri, keep_list, summary, pairs[MERGES], pairs[DUPLICATES], files)


def review_table(annotations: pd.DataFrame, filtered: FilterOutput | None) -> tuple[pd.DataFrame, str]:
    """The review table (:mod:`froq_ray.curation.review`) and where its ``percentile`` comes from
    (``calibration``: the annotated ``quality_percentile``; ``this set``: :func:`~froq_ray.curation.review.
    dataset_percentile` of the scored rows). With a filter output, its keep-list must hold exactly the
    annotations' paths (else :class:`ReviewInputError` naming one that differs); its identities are shown."""
    table = annotations.copy()
    scored = (table["status"].to_numpy(dtype=object) == st.OK) & np.isfinite(table["quality"].to_numpy())
    if PERCENTILE in table and np.isfinite(table.loc[scored, PERCENTILE].to_numpy()).any():
        table["percentile"], source = table[PERCENTILE], "calibration"
    else:
        table["percentile"] = np.where(
            scored, sel.dataset_percentile(np.where(scored, table["quality"], np.nan)), np.nan
        )
        source = "this set"
    if filtered is None:
        return table, source
    keep = filtered.keep_list
    missing = set(table["path"]).symmetric_difference(keep["path"])
    if missing or len(keep) != len(table):
        example = sorted(missing)[0] if missing else keep["path"][keep["path"].duplicated()].iloc[0]
        raise ReviewInputError(
            f"{join_uri(filtered.uri, KEEP_LIST)} does not list the same images as the annotations "
            f"({len(keep)} rows vs {len(table)}; e.g. {example}): give the filter output of these annotations"
        )
    table = table.drop(columns="identity").merge(
        keep[[*FILTER_COLUMNS, "nearest_identity"]], on="path", how="left", validate="one_to_one"
    )
    return table, source


# ------------------------------------------------------------------------------------------------ tiles
def _number(value: Any, fmt: str) -> str:
    return "-" if value is None or not np.isfinite(float(value)) else format(float(value), fmt)


def caption(row: pd.Series, source: str, filtered: bool) -> tuple[str, ...]:
    """Caption lines of one image: path, identity, quality and percentile, status (and the filter's decision
    and label-noise flag)."""
    status = str(row.get("status"))
    if filtered and row.get("keep") is not None and not pd.isna(row.get("keep")):
        status += " · kept" if bool(row["keep"]) else f" · dropped: {row['reason']}"
        if bool(row.get("label_noise")):
            status += f" · label noise ({row['label_noise_rule']})"
    identity = row.get("identity")
    return (
        str(row["path"]),
        str(identity) if isinstance(identity, str) else "(no identity)",
        f"q {_number(row.get('quality'), '.4f')} · p{_number(row.get('percentile'), '.1f')} ({source})",
        status,
    )


def short_caption(row: pd.Series) -> tuple[str, str, str]:
    """The contact sheet's caption: file name, identity, quality and percentile."""
    identity = row.get("identity")
    return (
        posixpath.basename(str(row["path"])),
        str(identity) if isinstance(identity, str) else "(no identity)",
        f"q {_number(row.get('quality'), '.4f')}  p{_number(row.get('percentile'), '.1f')}",
    )


class Thumbnails:
    """The thumbnail of every path the page shows: read (fsspec, :func:`~froq_ray.storage.reader.read_blobs`)
    and decoded (:func:`~froq_ray.imaging.decode.decode_batch`) once; ``skipped``: path -> (status, error) of
    the images that could not be read or decoded."""

    def __init__(self, paths: list[str], size: int, storage_options: dict[str, Any]) -> None:
        self.images: dict[str, Image.Image | None] = {}
        self.skipped: dict[str, tuple[str, str]] = {}
        for start in range(0, len(paths), READ_BATCH):
            batch = paths[start : start + READ_BATCH]
            blobs, errors = read_blobs(batch, storage_options)
            decoded = decode_batch(blobs, size, prior_errors=errors)
            for i, path in enumerate(batch):
                if decoded.statuses[i] == st.OK:
                    self.images[path] = Image.fromarray(decoded.pixels[i])
                else:
                    self.images[path] = None
                    self.skipped[path] = (decoded.statuses[i], decoded.errors[i] or decoded.statuses[i])

    def tiles(self, rows: pd.DataFrame, role: str, source: str, filtered: bool) -> list[Tile]:
        return [
            Tile(
                str(row["path"]),
                caption(row, source, filtered),
                role,
                self.images[str(row["path"])],
                self.skipped.get(str(row["path"]), (None, None))[1],
                short_caption(row),
            )
            for _, row in rows.iterrows()
        ]


def _noise_line(row: pd.Series) -> str:
    nearest = row.get("nearest_identity")
    return (
        f"CCS {_number(row.get('ccs'), '.3f')} · NNCCS {_number(row.get('nnccs'), '.3f')} -> "
        f"{nearest if isinstance(nearest, str) else '-'}"
    )


# ------------------------------------------------------------------------------------------------ sections
@dataclass
class _Plan:
    """The selections of every section, before any image is read."""

    lowest: pd.DataFrame
    highest: pd.DataFrame
    bands: list[sel.Band]
    noise: list[sel.Group] | None
    merges: list[sel.Group] | None
    duplicates: list[sel.Group] | None

    def paths(self) -> list[str]:
        frames = [self.lowest, self.highest, *(b.rows for b in self.bands)]
        for groups in (self.noise, self.merges, self.duplicates):
            for group in groups or []:
                frames += [group.subjects, *group.samples.values()]
        return sorted({str(p) for f in frames if len(f) for p in f["path"]})


def plan_sections(cfg: ReviewConfig, table: pd.DataFrame, filtered: FilterOutput | None) -> _Plan:
    """What each section shows (:mod:`froq_ray.curation.review`)."""
    n = cfg.identity_samples
    noise = merges = duplicates = None
    if filtered is not None:
        noise = sel.label_noise_groups(table, n, cfg.max_label_noise)
        if filtered.merges is not None:
            merges = sel.merge_groups(table, filtered.merges, n, cfg.max_pairs)
        if filtered.duplicates is not None:
            duplicates = sel.duplicate_pairs(table, filtered.duplicates, cfg.max_pairs)
    return _Plan(
        sel.lowest(table, cfg.extremes),
        sel.highest(table, cfg.extremes),
        sel.bands(table, cfg.bands, cfg.per_band) if cfg.bands else [],
        noise,
        merges,
        duplicates,
    )


def build_sections(
    cfg: ReviewConfig,
    table: pd.DataFrame,
    source: str,
    filtered: FilterOutput | None,
    *,
    plan: _Plan,
    thumbs: Thumbnails,
) -> list[Section]:
    """The page's sections (module doc), each with its ``count`` (images / flags / pairs in the data)."""
    has_filter = filtered is not None
    scored = len(sel.scored(table))
    quality = cfg.quality_column

    def tiles(rows: pd.DataFrame, role: str) -> list[Tile]:
        return thumbs.tiles(rows, role, source, has_filter)

    sections = []
    if cfg.extremes:
        for key, title, rows in (
            ("lowest", "Lowest quality", plan.lowest),
            ("highest", "Highest quality", plan.highest),
        ):
            sections.append(
                Section(
                    key,
                    title,
                    f"The {len(rows)} {key} values of {quality} among {scored} scored images (ties: path).",
                    [tiles(rows, "subject")] if len(rows) else [],
                    len(rows),
                    shown=len(rows),
                )
            )
    for band in plan.bands:
        sections.append(
            Section(
                f"band-{band.index:02d}",
                f"Percentile band {band.low:g}-{band.high:g} ({source})",
                f"{band.total} scored images in this band; {len(band.rows)} shown, evenly spaced from its lowest "
                f"to its highest {quality}.",
                [tiles(band.rows, "subject")] if len(band.rows) else [],
                band.total,
                shown=len(band.rows),
            )
        )
    sections += _filter_sections(cfg, filtered, plan, tiles)
    return sections


def _filter_sections(cfg: ReviewConfig, filtered: FilterOutput | None, plan: _Plan, tiles) -> list[Section]:
    no_filter = "No filter output given (review.filter / --filter): nothing to show."
    if filtered is None:
        return [
            Section("label_noise", "Label-noise flags", "", [], 0, no_filter),
            Section("merges", "Suggested identity merges", "", [], 0, no_filter),
            Section("duplicates", "Near-duplicates", "", [], 0, no_filter),
        ]
    flagged = int(filtered.keep_list["label_noise"].fillna(False).astype(bool).sum())
    groups = []
    for group in plan.noise or []:
        subject = tiles(group.subjects, "subject")
        subject = [replace(t, lines=(*t.lines, _noise_line(group.subjects.iloc[0]))) for t in subject]
        groups.append(
            subject + tiles(group.samples["own"], "own") + tiles(group.samples["nearest"], "nearest")
        )
    sections = [
        Section(
            "label_noise",
            "Label-noise flags",
            f"{flagged} images flagged by the filter ({_shown(len(groups), flagged)}; lowest CCS first). Each "
            f"flagged image, then up to {cfg.identity_samples} images of its own identity (green) and of its "
            "nearest other identity (orange), best quality first.",
            groups,
            flagged,
        )
    ]
    for key, title, frame, name, found, what in (
        ("merges", "Suggested identity merges", filtered.merges, MERGES, plan.merges, "merge suggestions"),
        (
            "duplicates",
            "Near-duplicates",
            filtered.duplicates,
            DUPLICATES,
            plan.duplicates,
            "near-duplicate pairs",
        ),
    ):
        if frame is None:
            sections.append(
                Section(
                    key,
                    title,
                    "",
                    [],
                    0,
                    f"The filter output {filtered.uri} has no {name} (the filter that wrote it does not report "
                    f"{what}): nothing to show.",
                )
            )
            continue
        groups = []
        for group in found or []:
            if key == "merges":
                groups.append(tiles(group.samples["a"], "a") + tiles(group.samples["b"], "b"))
            else:
                groups.append(tiles(group.subjects, "subject"))
        sections.append(
            Section(
                key,
                title,
                f"{len(frame)} {what} in {name} ({_shown(len(groups), len(frame))}; highest cosine first)"
                + (f": up to {cfg.identity_samples} images of each identity." if key == "merges" else "."),
                groups,
                len(frame),
            )
        )
    return sections


def _shown(shown: int, total: int) -> str:
    return "all shown" if shown == total else f"{shown} shown"


# ------------------------------------------------------------------------------------------------ job
def open_review_output(job: ReviewJob, inputs: list[AnnotationFile], *, dry_run: bool = False):
    """Check ``output.uri`` against ``output.mode`` (:func:`~froq_ray.storage.output.open_output` with
    :data:`OUTPUT`; the input digest covers the annotation files and the filter output's files). ``dry_run``:
    check only (:mod:`froq_ray.pipeline.outputs`). Raises :class:`~froq_ray.storage.run_state.OutputStateError`."""
    return open_files_job_output(job, OUTPUT, inputs, dry_run=dry_run)


def run_review(job: ReviewJob) -> dict[str, Any]:
    """Write the review (module doc); returns the manifest's ``results``. Raises :class:`ReviewInputError`
    and :class:`~froq_ray.storage.run_state.OutputStateError`."""
    started_at = utc_now()
    cfg, out = job.review, job.output
    timings: dict[str, float] = {}
    start = time.perf_counter()
    files = annotation_files(cfg.annotations, cfg.storage_options, error=ReviewInputError)
    filtered = read_filter_output(cfg.filter, cfg.storage_options) if cfg.filter else None
    inputs = [*files, *(filtered.files if filtered else [])]
    # opened for real only before writing: a refused input leaves the output as it was (pipeline/outputs.py)
    state = open_review_output(job, inputs, dry_run=True)
    if already_finished(job, state):
        return read_manifest(Location.of(out))["results"]
    table, source = review_table(read_annotations(cfg, files), filtered)
    unscored = unscored_rows(table)
    plan = plan_sections(cfg, table, filtered)
    timings["select"] = time.perf_counter() - start
    start = time.perf_counter()
    paths = plan.paths()
    thumbs = Thumbnails(paths, cfg.thumbnail_size, cfg.storage_options)
    timings["read"] = time.perf_counter() - start
    start = time.perf_counter()
    sections = build_sections(cfg, table, source, filtered, plan=plan, thumbs=thumbs)
    state = open_review_output(job, inputs)
    fs, root = state.fs, state.path
    if fs.exists(f"{root}/{SHEETS}"):  # an earlier review's sheets (resume recomputes): none may stay behind
        fs.rm(f"{root}/{SHEETS}", recursive=True)
    for section in sections:
        for k, png in enumerate(
            contact_sheets(section, cfg.thumbnail_size, cfg.sheet_columns, cfg.sheet_rows)
        ):
            name = f"{SHEETS}/{section.key}-{k:02d}.png"
            write_bytes_atomic(fs, f"{root}/{name}", png)
            section.sheets.append(name)
    skipped = sorted(thumbs.skipped.items())
    summary = _page_summary(cfg, table, source, filtered, len(paths), skipped, unscored)
    write_bytes_atomic(
        fs, f"{root}/{INDEX}", html_page("froq review", summary, sections, cfg.thumbnail_size).encode()
    )
    timings["render"] = time.perf_counter() - start
    by_reason = Counter(status for status, _ in thumbs.skipped.values())
    results = {
        "annotations": [f.uri for f in files],
        "filter": filtered.uri if filtered else None,
        "percentile_source": source,
        "images_shown": len(paths),
        "sections": {
            s.key: {"count": s.count, "shown": s.shown, "absent": s.absent, "sheets": s.sheets}
            for s in sections
        },
        "not_scored": unscored,
        "skipped": {
            "count": len(skipped),
            "by_status": dict(sorted(by_reason.items())),
            "listed": [{"path": p, "status": s, "error": e} for p, (s, e) in skipped[:SKIPS_LISTED]],
        },
        "outputs": {"page": join_uri(out.uri, INDEX), "sheets": join_uri(out.uri, SHEETS)},
    }
    write_job_manifest(
        job,
        state,
        started_at=started_at,
        counts_by_status=status_counts(table["status"]),
        stage_seconds=timings,
        results=results,
    )
    if unscored["count"]:
        log.warning("review: %s", _unscored_text(unscored, cfg.quality_column))
    for path, (status, error) in skipped:
        log.warning("review: image skipped (%s): %s: %s", status, path, error)
    log.info(
        "review: %d images shown in %d sections, %d skipped (placeholder tiles); page %s",
        len(paths),
        len(sections),
        len(skipped),
        join_uri(out.uri, INDEX),
    )
    return results


def unscored_rows(table: pd.DataFrame) -> dict[str, Any]:
    """The annotation rows the quality sections (lowest, highest, bands) leave out, counted: ``count``,
    ``by_status`` (rows not ok -- ``corrupt``, ``empty``, ``not_an_image``... -- by status, sorted),
    ``ok_without_quality`` (ok rows whose quality is null or not finite) and ``examples`` (the first
    :data:`NOT_SCORED_EXAMPLES` such paths, sorted). The page summary, the log and the manifest's
    ``results.not_scored`` report it."""
    status = table["status"].to_numpy(dtype=object)
    ok = status == st.OK
    finite = np.isfinite(table["quality"].to_numpy(dtype=np.float64))
    left_out = ~(ok & finite)
    return {
        "count": int(left_out.sum()),
        "by_status": status_counts(status[~ok]),
        "ok_without_quality": int((ok & ~finite).sum()),
        "examples": sorted(table["path"].to_numpy(dtype=object)[left_out])[:NOT_SCORED_EXAMPLES],
    }


def _unscored_text(unscored: dict[str, Any], quality_column: str) -> str:
    parts = [f"{status} {n}" for status, n in unscored["by_status"].items()]
    if unscored["ok_without_quality"]:
        parts.append(f"ok without a finite {quality_column} {unscored['ok_without_quality']}")
    return f"{unscored['count']} annotation row(s) not in the quality sections ({', '.join(parts)})" + (
        f"; e.g. {', '.join(unscored['examples'])}" if unscored["examples"] else ""
    )


def _page_summary(
    cfg: ReviewConfig,
    table: pd.DataFrame,
    source: str,
    filtered: FilterOutput | None,
    shown: int,
    skipped: list[tuple[str, tuple[str, str]]],
    unscored: dict[str, Any],
) -> list[tuple[str, str]]:
    counts = status_counts(table["status"])
    scored = len(sel.scored(table))
    rows = [
        ("annotations", ", ".join(cfg.annotations)),
        ("rows", f"{len(table)} ({', '.join(f'{k} {v}' for k, v in counts.items())})"),
        (
            "scored",
            f"{scored} ok rows with a finite {cfg.quality_column}; {counts.get(st.OK, 0) - scored} ok rows without",
        ),
        (
            "percentiles",
            "quality_percentile (against the calibration set)"
            if source == "calibration"
            else "this set's own quality distribution (quality_percentile not annotated)",
        ),
        ("not scored", _unscored_text(unscored, cfg.quality_column) if unscored["count"] else "none"),
        ("filter output", filtered.uri if filtered else "none"),
    ]
    if filtered is not None and filtered.summary is not None:
        s = filtered.summary
        dropped = ", ".join(f"{k} {v}" for k, v in (s.get("dropped_by_reason") or {}).items()) or "none"
        flags = s.get("label_noise_flagged")
        rows.append(
            (
                "filter",
                f"kept {s.get('kept')} of {s.get('rows')}; dropped: {dropped}; label-noise flags: {flags}",
            )
        )
    rows.append(("images shown", str(shown)))
    rows.append(
        (
            "images skipped",
            str(len(skipped))
            + (
                ""
                if not skipped
                else ": " + "; ".join(f"{p} ({s}: {e})" for p, (s, e) in skipped[:SKIPS_LISTED])
            ),
        )
    )
    rows.append(("thumbnails", "embedded in this page as data: URIs; contact sheets in sheets/"))
    return rows
