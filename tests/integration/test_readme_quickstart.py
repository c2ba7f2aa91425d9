"""The README's quickstart, as written there: `froq annotate` on LFW identity folders, then `froq evaluate` on
its output (on a copy of three identities' folders, on the real local Ray cluster)."""

from __future__ import annotations

import json
import shlex
import shutil
from math import comb
from pathlib import Path

import pandas as pd
import pytest

from froq_ray.cli import main
from tests.conftest import REPO_ROOT

IDENTITIES = {"Abdullah_Gul": 8, "Abdoulaye_Wade": 4, "Abel_Pacheco": 3}  # folder -> images in LFW-dev
README_INPUT = "../shared/data/lfw-dev/images"


def readme_commands() -> dict[str, list[str]]:
    """The `froq <job> ...` commands of the README's first bash block, continuation lines joined."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = {}
    for line in block.splitlines():
        tokens = shlex.split(line, comments=True)
        starts = [k for k, t in enumerate(tokens) if t.endswith("bin/froq")]
        if starts:
            args = tokens[starts[0] + 1 :]
            commands.setdefault(args[0], args)
    return commands


@pytest.mark.usefixtures("ray_cluster")
def test_readme_annotate_then_evaluate(lfw_dev_dir, tmp_path, monkeypatch):
    commands = readme_commands()
    annotate, evaluate = commands["annotate"], commands["evaluate"]
    subset = tmp_path / "images"
    for name, count in IDENTITIES.items():
        shutil.copytree(lfw_dev_dir / "images" / name, subset / name)
        assert len(list((subset / name).iterdir())) == count
    assert annotate[annotate.index("--input") + 1] == README_INPUT
    annotate[annotate.index("--input") + 1] = str(subset)
    monkeypatch.chdir(tmp_path)  # the README's relative out/ paths land here

    assert main(annotate) == 0
    ann = pd.read_parquet(tmp_path / annotate[annotate.index("--output") + 1])
    assert len(ann) == 15 and (ann.status == "ok").all()
    assert ann.identity.notna().all()
    assert ann.identity.tolist() == [Path(p).parent.name for p in ann.path]

    assert evaluate[evaluate.index("--annotations") + 1] == annotate[annotate.index("--output") + 1]
    assert main(evaluate) == 0
    out = tmp_path / evaluate[evaluate.index("--output") + 1]
    assert sorted(p.name for p in out.iterdir()) == [
        "_froq",
        "edc.csv",
        "edc.md",
        "edc.png",
        "thresholds.csv",
    ]
    table = pd.read_csv(out / "edc.csv")
    n_genuine = sum(comb(n, 2) for n in IDENTITIES.values())
    assert table[["method", "n_genuine", "n_impostor"]].values.tolist() == [
        ["quality", n_genuine, comb(15, 2) - n_genuine]
    ]
    assert table["fnmr0"].between(0, 1).all()
    assert {"pauc_lo@0.3", "pauc_hi@0.3"} <= set(table.columns)  # the default 200-replicate bootstrap band
    # 15 images: far too few false non-matches for the pAUC to mean anything, and the job says so
    n_fnm = round(table["fnmr0"].iloc[0] * n_genuine)
    warnings = json.loads((out / "_froq" / "manifest.json").read_text())["results"]["warnings"]
    assert f"quality: only {n_fnm} false non-matches before discarding (fewer than 30): " in warnings[0]
