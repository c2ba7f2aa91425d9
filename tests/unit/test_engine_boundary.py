"""Only ``froq_ray/engine/`` imports Ray: the method core and the job drivers stay engine-independent."""

from __future__ import annotations

import ast
from pathlib import Path

import froq_ray

PACKAGE = Path(froq_ray.__file__).parent


def ray_imports(path: Path) -> list[int]:
    """Line numbers of ``import ray...`` / ``from ray... import`` statements anywhere in the file."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.Import)
            and any(a.name == "ray" or a.name.startswith("ray.") for a in node.names)
            or isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and (node.module == "ray" or node.module.startswith("ray."))
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_engine_imports_ray():
    offenders = {
        str(p.relative_to(PACKAGE)): ray_imports(p)
        for p in PACKAGE.rglob("*.py")
        if "engine" not in p.relative_to(PACKAGE).parts and ray_imports(p)
    }
    assert offenders == {}


def test_the_scan_finds_ray_imports_in_the_engine():
    found = {p.name for p in (PACKAGE / "engine").glob("*.py") if ray_imports(p)}
    assert {"runtime.py", "dataset.py", "train.py"} <= found
