"""The output of a driver-side job (evaluate, filter, review, export): one call to the one output lifecycle,
:func:`~froq_ray.storage.output.open_output`, and the one way its run manifest is written, shared by those
jobs.

A job whose input is a set of files it reads whole (evaluate, filter, review) opens its output twice: first as a
dry run (``output.mode`` refusals, and a finished run that makes the job a no-op, before any work), then for real
only once its results are computed, just before it writes them. An input that the job refuses half-way therefore
leaves the output as it was: no run record in a new output, and an earlier run's files still there under
``output.mode: overwrite``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..config import JobConfig, config_digest, digest_payload, resolved_dict
from ..storage.annotations import AnnotationFile
from ..storage.location import Location
from ..storage.manifest import RunManifest, write_manifest
from ..storage.output import OutputLayout, files_digest, open_output
from ..storage.run_state import RunState

log = logging.getLogger("froq_ray")


def open_job_output(
    job: JobConfig,
    layout: OutputLayout,
    *,
    extra: Mapping[str, Any] | None = None,
    force: bool = False,
    input_digest: str | None = None,
    inputs: Sequence[str] = (),
    listing: pd.DataFrame | None = None,
    dry_run: bool = False,
) -> RunState:
    """Check ``job.output`` against its ``output.mode`` with the job's ``layout``: the config digest (and the
    settings it covers, recorded) is the job's with ``extra`` folded in (:func:`~froq_ray.config.config_digest`);
    ``force``, ``input_digest``, ``inputs``, ``listing`` and ``dry_run`` (the same checks and decisions, e.g.
    ``RunState.finished``, nothing deleted or recorded: module doc) as in
    :func:`~froq_ray.storage.output.open_output`.
    The returned state's ``run_info["config_digest"]`` is that digest. Raises
    :class:`~froq_ray.storage.run_state.OutputStateError` (one line naming the output)."""
    return open_output(
        Location.of(job.output),
        job.output.mode,
        layout,
        config_digest=config_digest(job, extra=extra),
        input_digest=input_digest,
        inputs=inputs,
        force=force,
        config=digest_payload(job, extra=extra),
        listing=listing,
        dry_run=dry_run,
    )


def open_files_job_output(
    job: JobConfig, layout: OutputLayout, files: Sequence[AnnotationFile], *, dry_run: bool = False
) -> RunState:
    """:func:`open_job_output` for a job whose input is a set of files it reads whole (evaluate, filter,
    review): the input digest covers ``files`` by name, size and modification time, and the output may hold
    none of them; ``dry_run``: check only (module doc). Raises
    :class:`~froq_ray.storage.run_state.OutputStateError` (one line naming the output)."""
    return open_job_output(
        job, layout, input_digest=files_digest(files), inputs=[f.uri for f in files], dry_run=dry_run
    )


def write_job_manifest(
    job: JobConfig,
    state: RunState,
    *,
    started_at: str,
    counts_by_status: Mapping[str, int],
    stage_seconds: Mapping[str, float],
    results: dict[str, Any],
) -> dict[str, Any]:
    """Write the run manifest of ``job`` (:class:`~froq_ray.storage.manifest.RunManifest`) to its output, opened
    as ``state`` (:func:`open_job_output`): the common header -- the job's name, ``started_at``, its resolved
    config and config digest, ``counts_by_status`` (``{status: rows}``), ``stage_seconds`` -- and the job's
    ``results``. Returns what was written (a JSON-able dict)."""
    return write_manifest(
        Location.of(job.output),
        RunManifest(
            job=job.job,
            started_at=started_at,
            config=resolved_dict(job),
            config_digest=state.run_info["config_digest"],
            counts_by_status=counts_by_status,
            stage_seconds=stage_seconds,
            results=results,
        ),
    )


def already_finished(job: JobConfig, state: RunState) -> bool:
    """Whether ``state`` (the dry run of a files job's output, :func:`open_files_job_output`) holds the finished
    run of this config and these inputs; if so, says on one log line that there is nothing to do."""
    if state.finished:
        log.info(
            "%s: %s holds the finished %s of this config and these inputs: nothing to do "
            "(output.mode=overwrite computes it again)",
            job.job,
            job.output.uri,
            job.job,
        )
    return state.finished
