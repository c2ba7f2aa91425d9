"""Helpers for job-level integration tests: small real inputs with bad files mixed in, config files, runs."""

from __future__ import annotations

import json
import os
import posixpath
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from froq_ray.cli import main
from tests.data_factory import bad_inputs

# Cheap perturbations for tests (8 forward passes per image instead of 76); the method is the same.
FAST_PERTURBATIONS = {"noise_masks": 2, "noise_alphas": [0.001], "occlusion_cell": 56}
SMALL_RESOURCES = {"ray_batch_size": 16, "model_batch_size": 16, "progress_interval_s": 1}
BAD_FILES = {
    "Bad_Inputs/corrupt.jpg": "corrupt",
    "Bad_Inputs/empty.jpg": "empty",
    "Bad_Inputs/not_an_image.png": "not_an_image",
}


def lfw_sample(lfw_dev: Path, identities: int, per_identity: int = 2) -> list[Path]:
    """The first ``per_identity`` images of the first ``identities`` identities with at least that many."""
    chosen = []
    for folder in sorted((lfw_dev / "images").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        if len(files) >= per_identity:
            chosen += files[:per_identity]
            if len(chosen) >= identities * per_identity:
                break
    return chosen


def bad_file_bytes() -> dict[str, bytes]:
    """Bytes for each of BAD_FILES (a truncated JPEG, zero bytes, text)."""
    samples = bad_inputs()
    by_status = {"corrupt": "jpeg_truncated_half", "empty": "empty", "not_an_image": "text"}
    return {name: samples[by_status[status]] for name, status in BAD_FILES.items()}


def folder_writer(folder: Path) -> Callable[[str, bytes], None]:
    """A ``write(relpath, bytes)`` for :func:`put_inputs` that writes under the local ``folder`` (making the
    parent folders it needs)."""

    def write(rel: str, data: bytes) -> None:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)

    return write


def put_inputs(write, images: list[Path]) -> int:
    """Write real images (as <identity>/<file>) and the bad files with ``write(relpath, bytes)``."""
    for path in images:
        write(f"{path.parent.name}/{path.name}", path.read_bytes())
    for name, data in bad_file_bytes().items():
        write(name, data)
    return len(images) + len(BAD_FILES)


def local_inputs(folder: Path, images: list[Path]) -> list[str]:
    """:func:`put_inputs` into the local ``folder``; returns the real images' paths there, sorted (the bad
    files not included)."""
    put_inputs(folder_writer(folder), images)
    return sorted(str(folder / p.parent.name / p.name) for p in images)


def write_config(tmp: Path, name: str, cfg: dict[str, Any]) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_job(command: str, config: Path, *extra: str) -> int:
    return main([command, "--config", str(config), *extra])


def read_output(uri: str, storage_options: dict | None = None) -> pd.DataFrame:
    return pd.read_parquet(uri, storage_options=storage_options or None)


def read_json_uri(uri: str, storage_options: dict | None = None) -> dict:
    import fsspec

    with fsspec.open(uri, "rt", **(storage_options or {})) as f:
        return json.load(f)


def identity_of(path: str) -> str:
    return posixpath.basename(posixpath.dirname(path))


def env_with_repo_on_path() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def froq_command(command: str, *args: str) -> list[str]:
    """The command line of ``froq <command> <args>`` run by this interpreter in a fresh driver process."""
    return [sys.executable, "-m", "froq_ray.cli", command, *args]


def kill_driver_when(
    command: str, config: Path, condition: Callable[[], bool], timeout_s: float, poll_s: float
) -> None:
    """Run ``froq <command> --config <config>`` in a subprocess driver (its own session, output discarded,
    this checkout first on its PYTHONPATH) and SIGKILL it once ``condition()`` holds, polled every ``poll_s``
    seconds: the trigger is a progress count, not a time; ``timeout_s`` only bounds a run that never gets
    there (the caller then sees too little progress). Fails the test if the driver ended by itself first."""
    proc = subprocess.Popen(
        froq_command(command, "--config", str(config)),
        env=env_with_repo_on_path(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not condition() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(poll_s)
        exited_by_itself = proc.poll()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert exited_by_itself is None, f"the run ended (exit {exited_by_itself}) before it could be killed"
