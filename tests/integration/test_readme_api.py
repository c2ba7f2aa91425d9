"""The README's "Python API" section runs as written: every ```python block of that section (up to the next
``## `` heading), in order, in one namespace, from a folder with ``../shared`` beside it (the repository root's
layout), on the real local Ray cluster for the ``ray_stage`` example. The values the blocks leave behind are
then checked against the scorer."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, SHARED

pytestmark = pytest.mark.integration

SECTION = "## Python API"


def readme_python_blocks(text: str) -> list[str]:
    """The ```python blocks between the ``## Python API`` heading and the next ``## `` heading."""
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + len(SECTION) + 1)
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def test_the_convention_finds_the_blocks():
    blocks = readme_python_blocks((REPO_ROOT / "README.md").read_text())
    assert len(blocks) == 3
    assert "froq_ray.Scorer.load(" in blocks[0] and "ray_stage(" in blocks[2]
    text = "intro\n## Python API\n```python\na = 1\n```\n```bash\nls\n```\n## Next\n```python\nb = 2\n```\n"
    assert readme_python_blocks(text) == ["a = 1\n"]


def test_readme_python_api_examples_run_as_written(ray_cluster, tmp_path, monkeypatch):
    assert ray_cluster.is_initialized()  # the ray_stage example runs on the test cluster
    (tmp_path / "shared").symlink_to(SHARED.resolve())
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")  # ../shared as beside the repository root; nothing is written there
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(readme_python_blocks((REPO_ROOT / "README.md").read_text())):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)

    df, scorer = namespace["df"], namespace["scorer"]
    assert df.status.tolist() == ["ok", "ok", "read_error"]
    assert df.error[2].endswith("missing.jpg: not found") and np.isnan(df.quality[2])
    assert namespace["emb"].dtype == np.float32 and namespace["emb"].shape == (128,)
    rows = sorted(namespace["result"], key=lambda r: r["path"])
    assert [(r["identity"], r["status"]) for r in rows] == [("Abdoulaye_Wade", "ok")] * 3
    direct = scorer.score([r["path"] for r in rows])
    np.testing.assert_allclose([r["quality"] for r in rows], direct.quality.to_numpy(), rtol=1e-5)
