"""Shared fixtures: paths to the read-only assets beside the checkout, and a real local Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
LFW_DEV = SHARED / "data" / "lfw-dev"
MOBILEFACENET_DIR = SHARED / "models" / "mobilefacenet"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"the shared assets folder must sit beside the checkout: {SHARED}"
    return SHARED


@pytest.fixture(scope="session")
def lfw_dev_dir() -> Path:
    assert (LFW_DEV / "images").is_dir(), f"missing {LFW_DEV}/images"
    return LFW_DEV


@pytest.fixture(scope="session")
def mobilefacenet_pt() -> Path:
    path = MOBILEFACENET_DIR / "mobilefacenet.pt"
    assert path.is_file(), f"missing {path}"
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny networks on one torch thread (on a busy machine, idle OpenMP workers only spin)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (not local_mode) with a fixed CPU count, shared by the integration tests."""
    import ray

    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    try:
        yield ray
    finally:
        ray.shutdown()


pytest_plugins = ["tests.s3_server", "tests.preflight"]
