"""The scoring run shared by calibrate, annotate and the distill job's self-training copies.

The driver plans and commits; workers list, read, decode, score and write:

1. the driver loads the model (a missing file fails before Ray starts) and checks the output location
   (``prepare_output``: mode, config digest, refusal naming the changed keys);
2. the inputs are listed once per output by Ray tasks into ``_froq/inputs/`` Parquet parts
   (:mod:`froq_ray.engine.inputs`); a resume or retry reuses them and never lists again;
3. the parts are cut into shards (fixed row ranges of one input part, ``output.shard_size`` rows); shards
   whose completion marker exists are skipped;
4. one Ray Data graph reads + decodes each pending shard in a CPU task, scores it in an autoscaling actor pool
   and writes it (Parquet, then its marker) in a CPU task (:mod:`froq_ray.engine.write`);
5. the driver iterates one small record per written shard (progress lines, counts, stage seconds) and
   finally writes ``_froq/manifest.json``. It never holds a row of the data.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import AnnotateJob, CalibrateJob, config_digest, digest_payload, resolved_dict
from ..errors import UserError
from ..models import LoadedModel
from ..storage.fs import check_reachable, open_fs
from ..storage.listing import input_digest, source_kind
from ..storage.location import Location
from ..storage.manifest import RunManifest, utc_now, write_manifest
from ..storage.output import OutputLayout, open_output
from ..storage.run_state import OutputStateError, RunState, discard_stale_shards, record_input_digest
from ..storage.schema import schema_metadata
from ..storage.shards import Shard, read_markers
from .dataset import MapStage, scoring_dataset
from .inputs import InputRange, InputsPlan, inputs_from_table, materialize_inputs, plan_exists
from .modes import ScoringMode, job_scoring_mode
from .progress import ProgressReporter, quality_quantiles
from .runtime import check_requests_fit, ensure_ray, no_progress_error, scoring_context
from .stages import DecodeStageConfig, ReadStageConfig, ScoringStageConfig, load_scoring_model
from .write import WriteStageConfig

log = logging.getLogger("froq_ray")

ModelJob = AnnotateJob | CalibrateJob
STAGES = ("list", "read", "decode", "score", "write")
"""The stages whose seconds the run manifest reports (worker seconds summed over shards; list: wall)."""


class NoProgressError(UserError, RuntimeError):
    """No shard finished within the no-progress timeout (e.g. a node was lost and none replaced it).

    Its message names the timeout (``resources.no_progress_timeout_s``) and what to check; completed shards
    stay, so a re-run resumes. A :class:`~froq_ray.errors.UserError` (one line, exit status 2)."""


@dataclass
class PreparedRun:
    """Everything decided on the driver before scoring starts (no rows: the inputs live in ``inputs``' parts).

    ``cfg``: the validated job config; ``model``: the driver's loaded model (for the schema and ids);
    ``config_digest``: sha256 hex of the result-relevant config; ``state``: the output's run state (markers of
    finished shards); ``inputs``: the listing plan; ``ranges``/``shards``: one :class:`InputRange` and one
    :class:`Shard` per output shard, in order; ``pending``: the shards still to write; ``list_seconds``: wall
    seconds of the listing; ``identity_extra``: job-specific values recorded in the run identity. Built by
    :func:`prepare_run`, which raises (output state, listing errors); the object itself does not."""

    cfg: ModelJob
    model: LoadedModel
    config_digest: str
    state: RunState
    inputs: InputsPlan
    ranges: list[InputRange]
    shards: list[Shard]
    pending: list[Shard]
    list_seconds: float = 0.0
    identity_extra: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=utc_now)
    """When the job started (UTC, the run manifest's ``started_at``)."""

    @property
    def input_digest(self) -> str:
        return self.inputs.digest


def load_job_model(cfg: ModelJob) -> LoadedModel:
    """Check the input exists (one metadata call, no listing) and load the model on the driver: a missing
    input, model file or unreachable endpoint fails here, before Ray starts."""
    check_reachable(cfg.input.uri, cfg.input.storage_options)
    source_kind(cfg.input, *open_fs(cfg.input.uri, cfg.input.storage_options))  # a missing input fails here
    model = load_scoring_model(scoring_stage_config(cfg, job_scoring_mode(cfg).name))
    log.info("model: %s (weights sha256 %s)", model.model_id, model.weights_sha256)
    return model


def prepare_run(
    cfg: ModelJob,
    model: LoadedModel,
    extra: dict[str, Any],
    force: bool,
    *,
    layout: OutputLayout,
    dry_run: bool = False,
) -> PreparedRun:
    """Check the output against ``output.mode`` (:func:`~froq_ray.storage.output.open_output` with the job's
    ``layout``), list the inputs into it (or reuse the listing of the run being resumed), cut the shards and
    find the pending ones.

    ``dry_run`` (``froq plan``): the same decisions, writing and deleting nothing: the same refusals
    (:class:`~froq_ray.storage.run_state.OutputStateError`), the stored listing when the run would reuse it
    (then Ray is not started), else the input listed by the same Ray tasks, which return only counts and
    digests (:func:`~froq_ray.engine.inputs.materialize_inputs`); the shards a resume would keep.

    First of all, before the output is opened (no run record is left): a request that no node of the local Ray
    can grant is refused (:func:`~froq_ray.engine.runtime.check_requests_fit`, ``ResourceRequestError``)."""
    started_at = utc_now()
    check_requests_fit(cfg.resources)
    out = cfg.output
    digest = config_digest(cfg, extra=extra)
    state = open_output(
        Location.of(out),
        out.mode,
        layout,
        config_digest=digest,
        inputs=(cfg.input.uri,),
        force=force,
        config=digest_payload(cfg, extra=extra),
        dry_run=dry_run,
        listed_extensions=cfg.input.extensions,
    )
    # a forced resume lists again: the input keys may have changed, and shards of another listing are redone
    reuse = out.mode == "resume" and not state.forced and plan_exists(state.fs, state.path)
    if not reuse:
        ensure_ray(cfg.resources)
    started = time.perf_counter()
    inputs = materialize_inputs(cfg.input, state.fs, state.path, reuse=reuse, dry_run=dry_run)
    list_seconds = 0.0 if reuse else time.perf_counter() - started
    record_input_digest(state, inputs.digest, force, dry_run=dry_run)
    log.info(
        "inputs: %d images in %d part(s) (%s)",
        inputs.total_rows,
        len(inputs.parts),
        "listing reused" if reuse else f"listed in {list_seconds:.1f} s",
    )
    job = _with_shards(cfg, model, digest, state, inputs, list_seconds, extra, dry_run)
    job.started_at = started_at
    return job


@dataclass
class PlannedRun:
    """What a run of a job would do (``froq plan``), decided by the run's own functions.

    ``inputs``: the listing's plan (the stored one when the run would reuse it, else counted by the listing
    tasks); ``shards``: how many shards the run cuts from it; ``job``: the dry-run :class:`PreparedRun`, None
    when the run would be refused; ``refusal``: the run's refusal message (its first line, then detail lines).
    """

    inputs: InputsPlan
    shards: int
    job: PreparedRun | None = None
    refusal: str | None = None

    def decision(self) -> str:
        """One line: ``refused: <reason>``, ``new run: M shard(s) to write`` (``output.mode`` overwrite says that
        the earlier files go first), ``resume: N of M shard(s) done, K to write`` (``--force`` says so) or
        ``nothing to do: all M shard(s) done``."""
        if self.job is None:
            return f"refused: {str(self.refusal).splitlines()[0]}"
        state, total = self.job.state, self.shards
        todo = len(self.job.pending)
        if state.resumed:
            forced = " (--force: resuming although the run record differs)" if state.forced else ""
            if not todo:
                return f"nothing to do: all {total} shard(s) done{forced}"
            return f"resume: {total - todo} of {total} shard(s) done, {todo} to write{forced}"
        earlier = " (output.mode overwrite: what an earlier run wrote there is deleted first)"
        return f"new run: {total} shard(s) to write{earlier if state.mode == 'overwrite' else ''}"


def plan_run(
    cfg: ModelJob, model: LoadedModel, extra: dict[str, Any], layout: OutputLayout, *, force: bool = False
) -> PlannedRun:
    """What ``cfg`` run with ``force`` would do, writing and deleting nothing: :func:`prepare_run` with
    ``dry_run``. Where the run would be refused the refusal is returned (not raised) and the inputs are still
    counted by the listing tasks. Starts or joins Ray only when the input has to be listed (no stored listing
    that the run would reuse). Raises what listing raises (``InputListingError``)."""
    try:
        job = prepare_run(cfg, model, extra, force, layout=layout, dry_run=True)
    except OutputStateError as exc:
        ensure_ray(cfg.resources)
        fs, path = open_fs(cfg.output.uri, cfg.output.storage_options)
        inputs = materialize_inputs(cfg.input, fs, path, reuse=False, dry_run=True)
        return PlannedRun(inputs, len(inputs.ranges(cfg.output.shard_size)), refusal=str(exc))
    return PlannedRun(job.inputs, len(job.shards), job)


def prepare_table_run(
    cfg: Any,
    model: LoadedModel,
    out_uri: str,
    digest: str,
    *,
    settings: dict[str, Any],
    table: pd.DataFrame,
    force: bool,
    layout: OutputLayout,
) -> PreparedRun:
    """:func:`prepare_run` for inputs a job derived on the driver (the distill job's self-training copies, a
    ``(path, identity)`` table): always ``resume`` into ``out_uri``, the table written once as the input parts.
    The same resource check first (``ResourceRequestError`` before anything is written)."""
    check_requests_fit(cfg.resources)
    state = open_output(
        Location(out_uri, dict(cfg.output.storage_options)),
        "resume",
        layout,
        config_digest=digest,
        input_digest=input_digest(table),
        force=force,
        config=settings,
        listing=table,
    )
    ensure_ray(cfg.resources)
    inputs = inputs_from_table(
        table, state.fs, state.path, reuse=state.resumed and plan_exists(state.fs, state.path)
    )
    return _with_shards(cfg, model, digest, state, inputs, 0.0, {})


def _with_shards(cfg, model, digest, state, inputs, list_seconds, extra, dry_run=False) -> PreparedRun:
    shard_size = cfg.output.shard_size
    ranges = inputs.ranges(shard_size)
    shards = [Shard(i, r.row0, r.row0 + r.stop - r.start) for i, r in enumerate(ranges)]
    bounds = {s.index: (s.start, s.stop) for s in shards}
    deleted = discard_stale_shards(state, bounds, inputs.digest, dry_run=dry_run)
    if deleted:
        log.warning(
            "%s %d part/marker file(s) of shards to redo: other shard bounds or input listing, a part without "
            "its marker, or a part whose size differs from its marker (interrupted or truncated)",
            "a run would delete" if dry_run else "deleted",
            deleted,
        )
    pending = [s for s in shards if not _done(state.markers, s)]
    log.info(
        "%d shard(s) of up to %d rows, %d already complete",
        len(shards),
        shard_size,
        len(shards) - len(pending),
    )
    return PreparedRun(cfg, model, digest, state, inputs, ranges, shards, pending, list_seconds, dict(extra))


def _done(markers: dict[int, dict[str, Any]], shard: Shard) -> bool:
    marker = markers.get(shard.index)
    return marker is not None and (marker.get("start"), marker.get("stop")) == (shard.start, shard.stop)


def _committed(job: PreparedRun) -> int:
    """How many of ``job``'s pending shards have a completion marker now (one listing of ``_froq``): write
    tasks commit shards before the driver receives their records, so the driver's own count can lag."""
    markers = read_markers(job.state.fs, job.state.path)
    return sum(1 for s in job.pending if _done(markers, s))


def _check_headroom(headroom_cpus: float) -> None:
    """Warn when the CPU headroom leaves Ray Data no CPU on the cluster as it is now (an autoscaling cluster may
    still grow, so this is a warning, not a refusal)."""
    if not headroom_cpus:
        return
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if headroom_cpus >= cpus:
        log.warning(
            "resources.headroom_cpus=%g leaves no CPU for the run on the cluster as it is now (%g CPU(s)): it runs "
            "only once the cluster grows (headroom is what Ray Data leaves free for rebuilding lost blocks)",
            headroom_cpus,
            cpus,
        )


def scoring_stage_config(
    cfg: ModelJob,
    mode: str,
    artifact_json: str | None = None,
    candidate_layers: tuple[str, ...] | None = None,
) -> ScoringStageConfig:
    """:meth:`ScoringStageConfig.from_job` (kept for the job drivers that call it by this name)."""
    return ScoringStageConfig.from_job(
        cfg, mode, artifact_json=artifact_json, candidate_layers=candidate_layers
    )


@dataclass
class RunResult:
    """What :func:`run_shards` reports for the shards it wrote in this run (finished shards of an earlier run
    are not included).

    ``counts``: rows per status; ``rows_written``/``shards_written``: ``int``; ``seconds``: wall seconds since
    the run's progress started; ``quality``: float64 (K,), the sample described below; ``stage_seconds``:
    worker seconds per stage of :data:`STAGES` (summed over shards). A plain record; raises nothing."""

    counts: dict[str, int]
    rows_written: int
    shards_written: int
    seconds: float
    quality: np.ndarray
    """A sample of this run's qualities (evenly spaced order statistics of every shard), for the summary."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    graphs: list[str] = field(default_factory=list)
    """The observed graphs the scoring actors reported for this run's shards (``mode: froq``), sorted."""


def run_shards(
    job: PreparedRun,
    mode: ScoringMode,
    stage: ScoringStageConfig,
    schema: pa.Schema,
    *,
    calibration_id: str | None,
    decode: DecodeStageConfig | None = None,
    between: Sequence[MapStage] = (),
) -> RunResult:
    """Score and write the pending shards of ``job`` on the workers in scoring ``mode``; the driver only counts
    what they report.

    Every row gets the mode's per-run columns (:meth:`~froq_ray.engine.modes.ScoringMode.constants` of
    ``job.model`` and ``calibration_id``). ``decode`` defaults to reading with ``input.storage_options``;
    ``between``: CPU stages (e.g. the distill job's degradation) applied to the decoded rows before scoring.
    Raises ``ValueError`` from :meth:`~froq_ray.engine.modes.ScoringMode.constants` (a ``calibration_id`` the
    mode cannot take) and :class:`NoProgressError` when no shard finishes for ``resources.no_progress_timeout_s``
    (default: the mode's ``default_no_progress_timeout_s``; re-running resumes)."""
    constants = mode.constants(job.model, calibration_id)
    cfg = job.cfg
    r = cfg.resources
    if decode is None:
        decode = DecodeStageConfig(
            storage_options=dict(cfg.input.storage_options), num_cpus=r.decode_num_cpus
        )
    metadata = schema_metadata(job.config_digest, job.model.model_id, calibration_id)
    out_uri = job.state.out_uri
    # the run's metadata beside what the schema carries already (the mode's score kind)
    schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
    write = WriteStageConfig.create(
        out_uri, cfg.output.storage_options, schema, constants, inputs_digest=job.inputs.digest
    )
    read = ReadStageConfig(out_uri, dict(cfg.output.storage_options), decode)
    items = [
        {
            "shard": s.index,
            "part": job.ranges[s.index].part,
            "start": job.ranges[s.index].start,
            "stop": job.ranges[s.index].stop,
            "row0": s.start,
        }
        for s in job.pending
    ]
    ensure_ray(r)
    _check_headroom(r.headroom_cpus)
    timeout = r.no_progress_timeout_s or mode.default_no_progress_timeout_s
    progress = ProgressReporter(sum(s.rows for s in job.pending), cfg.output.progress_interval_s)
    counts: Counter[str] = Counter()
    seconds = dict.fromkeys(STAGES, 0.0)
    samples, written, graphs = [], 0, set()
    with scoring_context(timeout, r.headroom_cpus):
        ds = scoring_dataset(
            items,
            read,
            stage,
            write,
            between=between,
            max_tasks_in_flight_per_actor=r.max_tasks_in_flight_per_actor,
        )
        try:
            for record in ds.iter_rows():
                shard_counts = json.loads(record["counts"])
                counts.update(shard_counts)
                progress.add(shard_counts)
                for name in STAGES[1:]:
                    seconds[name] += float(record[f"seconds_{name}"])
                samples.extend(json.loads(record["quality_sample"]))
                graphs.update(json.loads(record["graphs"]))
                written += 1
        except Exception as exc:
            error = no_progress_error(exc, timeout)
            if error is None:
                raise
            raise NoProgressError(
                f"{error}; {_committed(job)} of {len(job.pending)} pending shard(s) were written and are kept: "
                f"re-run the same command to resume from them"
            ) from None
    log.info(progress.line())
    seconds["list"] = job.list_seconds
    return RunResult(
        dict(sorted(counts.items())),
        progress.done,
        written,
        progress.elapsed(),
        np.asarray(samples),
        {k: round(v, 3) for k, v in seconds.items()},
        sorted(graphs),
    )


def scoring_manifest(job: PreparedRun, result: RunResult, total_counts: dict[str, int]) -> RunManifest:
    """The run manifest of a scoring job (:class:`~froq_ray.storage.manifest.RunManifest`): the common header
    (counts over every shard of the output, this run's stage seconds) and ``results``: model, input, shards,
    this run's rows, seconds and counts, resumed / forced. The job adds its own entries to ``results``."""
    rate = result.rows_written / result.seconds if result.seconds > 0 else 0.0
    return RunManifest(
        job=job.cfg.job,
        started_at=job.started_at,
        config=resolved_dict(job.cfg),
        config_digest=job.config_digest,
        counts_by_status=total_counts,
        stage_seconds=result.stage_seconds,
        results={
            "model": {
                **job.model.identity(),
                "model_id": job.model.model_id,
                "weights_path": job.model.weights_path,
            },
            "input": {
                "uri": job.cfg.input.uri,
                "images": job.inputs.total_rows,
                "digest": job.input_digest,
                **job.inputs.summary,
            },
            "shards": {
                "total": len(job.shards),
                "written_this_run": result.shards_written,
                "resumed_from_earlier_runs": len(job.shards) - len(job.pending),
            },
            "this_run": {
                "rows": result.rows_written,
                "seconds": round(result.seconds, 3),
                "images_per_second": round(rate, 2),
                "counts_by_status": result.counts,
            },
            "resumed": job.state.resumed,
            "forced": job.state.forced,
        },
    )


def write_scoring_manifest(job: PreparedRun, result: RunResult, entries: dict[str, Any]) -> dict[str, Any]:
    """Write the run manifest of a scoring job to its output and log its summary: :func:`scoring_manifest`
    with the counts over every shard (:func:`total_counts`) and the job's own ``entries`` added to ``results``,
    then :func:`summary_lines`. Returns what was written (a JSON-able dict)."""
    manifest = scoring_manifest(job, result, total_counts(job, result))
    manifest.results.update(entries)
    written = write_manifest(Location.of(job.cfg.output), manifest)
    for line in summary_lines(written, result.quality):
        log.info(line)
    return written


def total_counts(job: PreparedRun, result: RunResult) -> dict[str, int]:
    """Counts over every shard of the output: the markers of shards completed by earlier runs plus this run's."""
    counts = Counter(result.counts)
    pending = {s.index for s in job.pending}
    for shard in job.shards:
        if shard.index not in pending:
            counts.update({k: int(v) for k, v in job.state.markers[shard.index].get("counts", {}).items()})
    return dict(sorted(counts.items()))


def nothing_to_do(job: PreparedRun) -> bool:
    """True (and says so) when every shard of the output is complete: a re-run changes nothing."""
    if job.pending:
        return False
    log.info(
        "all %d shard(s) in %s are complete: nothing to do (output.mode=overwrite recomputes)",
        len(job.shards),
        job.cfg.output.uri,
    )
    return True


def summary_lines(manifest: dict, quality: np.ndarray) -> list[str]:
    """Log lines summing up a written scoring manifest (:func:`scoring_manifest`, as written)."""
    results = manifest["results"]
    run = results["this_run"]
    lines = [
        (
            f"summary: {results['input']['images']:,} inputs in {results['shards']['total']} shard(s); "
            f"this run wrote {run['rows']:,} rows in {results['shards']['written_this_run']} shard(s) "
            f"at {run['images_per_second']:,.1f} images/s"
        ),
        "summary: worker seconds by stage (this run): "
        + ", ".join(f"{k}={v:,.1f}" for k, v in manifest["stage_seconds"].items()),
        "summary: counts by status: "
        + ", ".join(f"{k}={v:,}" for k, v in manifest["counts_by_status"].items()),
    ]
    q = quality_quantiles(np.asarray(quality, dtype=np.float64))
    if q:
        lines.append(
            "summary: quality quantiles (this run, from per-shard order statistics): "
            + ", ".join(f"{k}={v:.4g}" for k, v in q.items())
        )
    return lines
