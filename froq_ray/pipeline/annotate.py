"""The annotate job: images -> FROQ quality (+ embedding) or pseudo-labels -> Parquet shards + manifest."""

from __future__ import annotations

import logging
import shlex

from ..config import AnnotateJob
from ..engine.modes import job_scoring_mode
from ..engine.runner import (
    load_job_model,
    nothing_to_do,
    prepare_run,
    run_shards,
    scoring_stage_config,
    write_scoring_manifest,
)
from ..engine.stages import scoring_settings
from ..storage.location import Location
from ..storage.manifest import read_manifest
from ..storage.output import OutputLayout
from ..storage.schema import EMBEDDING
from .artifacts import read_artifact

log = logging.getLogger("froq_ray")

OUTPUT = OutputLayout("annotate", shards=True)
"""What annotate owns in its output folder: the shards and the ``_froq/`` records."""


def digest_extra(model, calibration_id: str | None) -> dict[str, str | None]:
    """What the annotate job folds into its config digest besides the config: the weights' sha256 and the
    calibration id (None without a calibration), so new weights or a new built-in artifact behind the same
    config refuse a resume."""
    return {"weights_sha256": model.weights_sha256, "calibration_id": calibration_id}


def run_annotate(cfg: AnnotateJob, force: bool = False) -> dict:
    """Run (or resume) an annotation; returns the run manifest."""
    model = load_job_model(cfg)
    mode = job_scoring_mode(cfg)
    artifact = (
        read_artifact(cfg.calibration.artifact, model, cfg.input.storage_options)
        if mode.needs_calibration
        else None
    )
    calibration_id = artifact.calibration_id if artifact else None
    job = prepare_run(cfg, model, digest_extra(model, calibration_id), force, layout=OUTPUT)
    if nothing_to_do(job):
        return read_manifest(Location.of(cfg.output))
    stage = scoring_stage_config(cfg, mode.name, artifact_json=artifact.to_json() if artifact else None)
    schema = mode.output_schema(model, stage)
    log.info(
        "annotating %d of %d shard(s) (%d already complete) with %s; output %s",
        len(job.pending),
        len(job.shards),
        len(job.shards) - len(job.pending),
        model.model_id,
        cfg.output.uri,
    )
    result = run_shards(job, mode, stage, schema, calibration_id=calibration_id)
    scoring = {
        "mode": mode.name,
        "score_kind": mode.score_kind,
        "precision": cfg.scoring.precision,
        "quality_only": cfg.scoring.quality_only,
        "columns": [f.name for f in schema],
        "embedding": EMBEDDING in schema.names,
        **scoring_settings(stage, result.graphs),
    }
    written = write_scoring_manifest(job, result, {"calibration_id": calibration_id, "scoring": scoring})
    log.info("read it with: %s", read_command(cfg.output.uri))
    return written


def python_literal(text: str) -> str:
    """``text`` as a Python string literal (:func:`repr`), in double quotes when that needs no escape, so a
    shell command quoting it in single quotes (:func:`shlex.quote`) stays readable."""
    literal = repr(text)
    if literal.startswith("'") and '"' not in text:
        literal = f'"{literal[1:-1]}"'  # repr escaped no quote: the body reads the same in double quotes
    return literal


def read_command(uri: str) -> str:
    """A shell command that prints the ok rows of the annotations at ``uri`` by quality: ``python -c '...'``,
    the path a Python literal (:func:`python_literal`) and the code quoted for POSIX shells
    (:func:`shlex.quote`), so any path (``'``, ``"``, ``$``, spaces) reads back as itself."""
    code = (
        f"import pandas as pd; df = pd.read_parquet({python_literal(uri)}); "
        'print(df[df.status == "ok"].sort_values("quality")[["path", "quality"]])'
    )
    return f"python -c {shlex.quote(code)}"
