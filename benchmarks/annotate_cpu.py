"""Annotation throughput and memory on this machine, and memory flatness as the input grows.

For each multiple k in --copies, builds .bench/<name>-x<k>/ = k copies of the input tree made of symlinks (no
image bytes duplicated; every path distinct), runs `froq annotate` on it as a subprocess (a fresh local Ray) and
samples the summed RSS of the job's whole process tree (driver + GCS + raylet + workers) every 0.5 s. Prints a
table and writes JSON. Memory is flat when the peak for 10x the input is about the peak for 1x.

  .venv/bin/python benchmarks/annotate_cpu.py --copies 1,10 --out docs/results/annotate_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from froq_ray.bench.proctree import PeakSampler

ROOT = Path(__file__).resolve().parents[1]


def symlink_copies(src: Path, dst: Path, copies: int) -> int:
    """dst/copyNN/<relative path> -> src/<relative path> for every file; returns the number of images."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if not dst.exists():
        for k in range(copies):
            for f in files:
                link = dst / f"copy{k:02d}" / f.relative_to(src)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(f.resolve())
    return len(files) * copies


def run_once(input_dir: Path, out_dir: Path, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "froq_ray.cli",
        "annotate",
        "--input",
        str(input_dir),
        "--output",
        str(out_dir),
        "--mode",
        "overwrite",
        *extra,
    ]
    started = time.monotonic()
    with open(out_dir.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        with PeakSampler(proc.pid) as sampler:
            code = proc.wait()
    if code != 0:
        raise SystemExit(f"annotate failed ({code}); see {out_dir.with_suffix('.log')}")
    manifest = json.loads((out_dir / "_froq" / "manifest.json").read_text())
    return {
        "images": manifest["results"]["input"]["images"],
        "wall_seconds": round(time.monotonic() - started, 1),
        "images_per_second_streaming": manifest["results"]["this_run"]["images_per_second"],
        "peak_rss_driver_mib": round(sampler.peak_root / 2**20, 1),
        "peak_rss_job_tree_mib": round(sampler.peak_tree / 2**20, 1),
        "counts_by_status": manifest["counts_by_status"],
        "model_id": manifest["model"]["model_id"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default="../shared/data/lfw-dev/images")
    ap.add_argument("--copies", default="1,10")
    ap.add_argument("--work", default=".bench/annotate-cpu")
    ap.add_argument("--out", default="docs/results/annotate_cpu.json")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra froq --set KEY=VALUE")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    extra = [a for kv in args.overrides for a in ("--set", kv)]
    rows = []
    for k in (int(c) for c in args.copies.split(",")):
        tree = work / f"input-x{k}"
        n = symlink_copies(Path(args.input), tree, k)
        print(f"x{k}: {n} images ...", flush=True)
        rows.append({"copies": k, **run_once(tree, work / f"out-x{k}", extra)})
    print(
        f"\n{'copies':>6} {'images':>8} {'wall s':>8} {'images/s':>9} {'driver MiB':>11} {'job tree MiB':>13}"
    )
    for r in rows:
        print(
            f"{r['copies']:>6} {r['images']:>8} {r['wall_seconds']:>8} {r['images_per_second_streaming']:>9} "
            f"{r['peak_rss_driver_mib']:>11} {r['peak_rss_job_tree_mib']:>13}"
        )
    info = {"cpu_count": os.cpu_count(), "command": " ".join(sys.argv), "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
