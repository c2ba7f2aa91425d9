"""Fixtures of the preflight tests (a pytest plugin, see tests/conftest.py): a one-image input folder, and a
guard that fails a test when its job starts or joins Ray (a preflight failure must come before any Ray work);
a module opts in with ``pytestmark = pytest.mark.usefixtures("no_ray_started")``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def one_image_dir(tmp_path, lfw_dev_dir) -> Path:
    src = next((lfw_dev_dir / "images" / "Aaron_Sorkin").glob("*.jpg"))
    (tmp_path / "in" / "Aaron_Sorkin").mkdir(parents=True)
    (tmp_path / "in" / "Aaron_Sorkin" / src.name).write_bytes(src.read_bytes())
    return tmp_path / "in"


@pytest.fixture
def no_ray_started(monkeypatch):
    """A preflight failure must come before Ray is started or joined."""
    from froq_ray.engine import runner

    def refuse(*_args, **_kwargs):
        raise AssertionError("Ray was started although the job should have failed its preflight checks")

    monkeypatch.setattr(runner, "ensure_ray", refuse)
