"""infra/ manifests parse, and every entrypoint and config they name exists (and the config validates)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from froq_ray.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def referenced(command: str) -> tuple[list[str], list[str]]:
    words = shlex.split(command)
    scripts = [w for w in words if w.startswith("jobs/") and w.endswith(".py")]
    configs = [words[i + 1] for i, w in enumerate(words) if w == "--config"]
    return scripts, configs


def check_command(command: str) -> None:
    scripts, configs = referenced(command)
    assert scripts and configs, command
    for path in scripts + configs:
        assert (ROOT / path).is_file(), f"{path} named in infra/ does not exist"
    for cfg in configs:
        load_config(ROOT / cfg)


def test_rayjob_manifest():
    doc = yaml.safe_load((ROOT / "infra/rayjob-annotate.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    check_command(spec["entrypoint"])
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["backoffLimit"] >= 1  # safe: runs resume
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    workers = spec["rayClusterSpec"]["workerGroupSpecs"]
    gpu = [
        c
        for w in workers
        for c in w["template"]["spec"]["containers"]
        if c["resources"]["limits"].get("nvidia.com/gpu")
    ]
    assert gpu, "no GPU worker group"
    text = (ROOT / "infra/rayjob-annotate.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{12,}|aws_secret_access_key\s*[:=]", text, re.IGNORECASE)
    pods = [spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]] + [
        w["template"]["spec"] for w in workers
    ]
    assert all(p.get("serviceAccountName") for p in pods)
    # the autoscaling actor pool can use every GPU worker the group may grow to
    assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    _, configs = referenced(spec["entrypoint"])
    low, high = load_config(ROOT / configs[0]).resources.actor_range
    assert low < high == max(w["maxReplicas"] for w in workers)


def test_cluster_launcher_config():
    doc = yaml.safe_load((ROOT / "infra/cluster-gpu-aws.yaml").read_text())
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
    gpu_workers = max(t.get("max_workers", 0) for t in types.values() if t["resources"].get("GPU", 0) >= 1)
    header = "\n".join(
        line.lstrip("# ")
        for line in (ROOT / "infra/cluster-gpu-aws.yaml").read_text().splitlines()
        if line.startswith("#")
    )
    command = header[header.index("python jobs/") :].split("\n")[0]
    check_command(command)
    assert load_config(ROOT / referenced(command)[1][0]).resources.actor_range[1] == gpu_workers


def test_dockerfile_installs_the_package_without_torchvision():
    text = (ROOT / "infra/Dockerfile").read_text()
    assert text.startswith("#") and "\nFROM " in text
    copies = re.findall(r"^COPY (\S+)", text, re.MULTILINE)
    assert all((ROOT / c).exists() for c in copies), copies
    assert "torchvision" not in text.replace("No torchvision", "")


def test_shipped_configs_validate():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)
