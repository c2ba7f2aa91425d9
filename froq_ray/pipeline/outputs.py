"""The output of a job whose input is a set of files it reads whole (evaluate, filter, review): one call to the
one output lifecycle, :func:`~froq_ray.storage.output.open_output`, shared by those jobs.

Such a job opens its output twice: first as a dry run (``output.mode`` refusals, and a finished run that makes
the job a no-op, before any work), then for real only once its results are computed, just before it writes
them. An input that the job refuses half-way therefore leaves the output as it was: no run record in a new
output, and an earlier run's files still there under ``output.mode: overwrite``."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import JobConfig, config_digest, digest_payload
from ..storage.annotations import AnnotationFile
from ..storage.location import Location
from ..storage.output import OutputLayout, files_digest, open_output
from ..storage.run_state import RunState


def open_files_job_output(
    job: JobConfig, layout: OutputLayout, files: Sequence[AnnotationFile], *, dry_run: bool = False
) -> RunState:
    """Check ``job.output`` against its ``output.mode`` with the job's ``layout``: the config digest is the
    job's, the input digest covers ``files`` by name, size and modification time, and the output may hold none
    of them. ``dry_run``: the same checks and decisions (``RunState.finished``), nothing deleted or recorded
    (module doc). Raises :class:`~froq_ray.storage.run_state.OutputStateError` (one line naming the output)."""
    return open_output(
        Location.of(job.output),
        job.output.mode,
        layout,
        config_digest=config_digest(job),
        input_digest=files_digest(files),
        inputs=[f.uri for f in files],
        config=digest_payload(job),
        dry_run=dry_run,
    )
