"""The output of a job whose input is a set of files it reads whole (evaluate, filter, review): one call to the
one output lifecycle, :func:`~froq_ray.storage.output.open_output`, shared by those jobs."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import JobConfig, config_digest, digest_payload
from ..storage.annotations import AnnotationFile
from ..storage.location import Location
from ..storage.output import OutputLayout, files_digest, open_output
from ..storage.run_state import RunState


def open_files_job_output(job: JobConfig, layout: OutputLayout, files: Sequence[AnnotationFile]) -> RunState:
    """Check ``job.output`` against its ``output.mode`` with the job's ``layout``: the config digest is the
    job's, the input digest covers ``files`` by name, size and modification time, and the output may hold none
    of them. Raises :class:`~froq_ray.storage.run_state.OutputStateError` (one line naming the output)."""
    return open_output(
        Location.of(job.output),
        job.output.mode,
        layout,
        config_digest=config_digest(job),
        input_digest=files_digest(files),
        inputs=[f.uri for f in files],
        config=digest_payload(job),
    )
