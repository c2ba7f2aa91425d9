"""The ``froq`` command: one subcommand per job. ``jobs/*.py`` are thin wrappers for ``ray job submit``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean 'the user must fix something': printed as one message, no traceback."""
    from .errors import UserError

    return (UserError, FileNotFoundError, PermissionError)


def _add_job_args(p: argparse.ArgumentParser, with_input: bool = True) -> None:
    p.add_argument("--config", help="YAML job config (default: the built-in defaults)")
    if with_input:
        p.add_argument(
            "--input", help="input.uri: local folder, s3:// prefix, glob, or .parquet/.csv manifest"
        )
    p.add_argument("--output", help="output.uri: local folder or s3:// prefix")
    p.add_argument("--mode", choices=["resume", "overwrite", "error_if_exists"], help="output.mode")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set resources.actors=4 (repeatable). Text keys (paths, URIs, "
        "names, choices) take VALUE exactly as typed (an empty VALUE sets an optional one to null); "
        "numbers, booleans, lists and mappings are read as YAML",
    )
    p.add_argument("--log-level", default="INFO")


ANNOTATIONS_JOBS = ("filter", "distill", "review")
"""The jobs whose subcommand takes ``--annotations`` for ``<job>.annotations`` (argparse destination
``<job>_annotations``) and no ``--input``; evaluate's ``--annotations`` is listed in :data:`SHORTCUTS` itself."""


def _annotations_job_parser(sub, job: str, text: str) -> argparse.ArgumentParser:
    """The subcommand of ``job`` (one of :data:`ANNOTATIONS_JOBS`): the common job flags without ``--input``,
    then ``--annotations``."""
    p = sub.add_parser(job, help=text)
    _add_job_args(p, with_input=False)
    p.add_argument(
        "--annotations", dest=f"{job}_annotations", help=f"{job}.annotations: an annotate output folder"
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="froq", description="Face-image quality (FROQ) annotation on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("annotate", "score images -> Parquet quality annotations"),
        ("calibrate", "choose the observer layers -> calibration.json"),
    ):
        p = sub.add_parser(name, help=text)
        _add_job_args(p)
        p.add_argument("--force", action="store_true", help="resume even though the config or input changed")
    p = sub.add_parser(
        "evaluate", help="EDC / pAUC of quality columns of an annotation output", conflict_handler="resolve"
    )
    _add_job_args(p, with_input=False)
    p.add_argument(  # replaces the shared --mode: evaluate is one step, so there is nothing partial to resume
        "--mode",
        choices=["resume", "overwrite", "error_if_exists"],
        help="output.mode: resume (default) does nothing when the output holds the finished evaluation of the "
        "same config and annotations, and otherwise recomputes and replaces edc.md, edc.csv, edc.png and _froq/ "
        "(evaluate is one step); overwrite deletes the earlier files first; error_if_exists refuses an output "
        "that already holds them",
    )
    p.add_argument("--annotations", help="evaluate.annotations: an annotate output folder")
    p.add_argument(
        "--scores",
        action="append",
        help="evaluate.scores: a CSV or Parquet of path + score columns from another tool (repeatable)",
    )
    _annotations_job_parser(
        sub, "filter", "training-set curation: classifiability (CR) + policies -> keep-list"
    )
    p = _annotations_job_parser(
        sub, "distill", "train a small student on annotations (+ self-training) -> student artifact"
    )
    p.add_argument("--force", action="store_true", help="resume even though the config or data changed")
    p = sub.add_parser(
        "export",
        help="a keep-list's images -> identity folders, Parquet or WebDataset shards (sources untouched)",
    )
    _add_job_args(p, with_input=False)
    p.add_argument(
        "--keep-list",
        dest="export_keep_list",
        help="export.keep_list: a `froq filter` output or its keep_list.parquet",
    )
    p.add_argument(
        "--format", dest="export_format", choices=["folder", "parquet", "webdataset"], help="export.format"
    )
    p.add_argument("--force", action="store_true", help="resume even though the config or keep-list changed")
    p = _annotations_job_parser(
        sub, "review", "contact sheets + a static HTML page of the lowest/highest quality, flags, merges"
    )
    p.add_argument("--filter", dest="review_filter", help="review.filter: a `froq filter` output folder")
    p = sub.add_parser("plan", help="dry run of annotate or calibrate: inputs, shards, resources, schema")
    _add_job_args(p)
    p.add_argument("--job", choices=["annotate", "calibrate"], default="annotate")
    p.add_argument("--force", action="store_true", help="plan what the run with --force would do")
    sub.add_parser("models", help="list the face-recognition models in the registry")
    return parser


SHORTCUTS = (
    ("input", "input.uri"),
    ("output", "output.uri"),
    ("mode", "output.mode"),
    ("annotations", "evaluate.annotations"),
    ("scores", "evaluate.scores"),
    *((f"{job}_annotations", f"{job}.annotations") for job in ANNOTATIONS_JOBS),
    ("export_keep_list", "export.keep_list"),
    ("export_format", "export.format"),
    ("review_filter", "review.filter"),
)
"""(argparse destination, config key) of the shortcut flags; their values are set exactly as typed."""


def job_config(args: argparse.Namespace, job: str):
    """The validated config of ``job`` from ``--config`` (or the defaults), the shortcut flags (exact text)
    and the ``--set`` overrides (in that order; read per the key's type, see ``config.apply_overrides``).
    Raises ``config.ConfigError`` naming every bad key."""
    from .config import config_from_dict, load_config

    values = {key: getattr(args, flag) for flag, key in SHORTCUTS if getattr(args, flag, None) is not None}
    if args.config:
        return load_config(args.config, args.overrides, expected_job=job, values=values)
    return config_from_dict(
        {"job": job}, args.overrides, expected_job=job, source="command line", values=values
    )


def _run(args: argparse.Namespace) -> int:
    if args.command == "models":
        from .models import available_models

        for name, entry in available_models().items():
            weights = "weights required" if entry.needs_weights else "built-in weights"
            print(f"{name:16s} {entry.family:10s} {weights:17s} {entry.description}")
        return 0
    if args.command == "plan":
        from .pipeline.plan import plan_lines

        for line in plan_lines(job_config(args, args.job), force=args.force):
            print(line)
        return 0
    cfg = job_config(args, args.command)
    if args.command == "annotate":
        from .pipeline.annotate import run_annotate

        run_annotate(cfg, force=args.force)
    elif args.command == "calibrate":
        from .pipeline.calibrate import run_calibrate

        run_calibrate(cfg, force=args.force)
    elif args.command == "distill":
        from .pipeline.distill import run_distill

        run_distill(cfg, force=args.force)
    elif args.command == "export":
        from .pipeline.export import run_export

        run_export(cfg, force=args.force)
    elif args.command == "review":
        from .pipeline.review import run_review

        run_review(cfg)
    elif args.command == "filter":
        from .pipeline.filter import run_filter

        run_filter(cfg)
    else:
        from .pipeline.evaluate import run_evaluate

        run_evaluate(cfg)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "INFO")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )
    try:
        return _run(args)
    except _expected_errors() as exc:
        print(f"froq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"froq {args.command}: interrupted; completed shards are kept: run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
