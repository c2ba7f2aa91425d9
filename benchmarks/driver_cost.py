"""Driver cost of ``froq annotate`` at 10k / 100k / 1M inputs (issue 14): peak RSS and CPU seconds of the DRIVER
process alone, not of the cluster. Target: the driver's peak RSS grows by less than 20% from 10k to 1M rows.

    python -m benchmarks.driver_cost [--sizes 10000 100000 1000000] [--crops 8] [--work DIR]
                                     [--json docs/results/driver_cost.json]

For each size N it:

1. hard-links N distinct names (``links/<k // 10000>/<k>.jpg``) to a handful of real LFW-dev crops (distinct
   paths: a manifest lists a repeated path once; at most :data:`LINKS_PER_CROP` links per crop, the file
   system's limit) and writes a Parquet manifest of those N paths;
2. runs ``froq annotate`` on the manifest in a subprocess driver that joins a local Ray cluster started here
   (``ray.cluster_utils.Cluster``, its own temp dir), so the driver process holds nothing but the driver; the
   network is a tiny student (``tiny_cnn`` at 32 px) so that 1M rows fit in minutes on a small machine;
3. measures the driver: its peak RSS from the kernel's own high-water mark (``VmHWM`` in /proc/<pid>/status,
   read every 0.1 s until it exits; it only grows, so no short peak is missed), its user+system CPU seconds
   from ``os.wait4``'s rusage, the RSS sampled every 0.2 s (:class:`froq_ray.bench.proctree.PeakSampler`) as a
   cross-check, and rusage's ``ru_maxrss``, which is the largest of the driver AND the child processes it
   reaped (reported, not the target figure); and checks the output has N rows.

It prints a table and writes the JSON. A benchmark, not a timed test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from froq_ray.bench.proctree import PeakSampler
from froq_ray.storage.shards import read_markers

REPO = Path(__file__).resolve().parents[1]
LFW_IMAGES = REPO.parent / "shared" / "data" / "lfw-dev" / "images"
MIB = 2**20
LINKS_PER_FOLDER = 10_000
LINKS_PER_CROP = 60_000
"""At most this many hard links to one crop (ext4 allows 65,000 links per file): more crops for larger sizes."""
TARGET_GROWTH = 0.20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        help="input rows per run (default: 10000 100000 1000000)",
    )
    parser.add_argument(
        "--crops",
        type=int,
        default=8,
        help="real LFW-dev crops the inputs link to (default 8; raised to keep each crop under "
        f"{LINKS_PER_CROP:,} links)",
    )
    parser.add_argument(
        "--shard-size", type=int, default=None, help="output.shard_size (default: the config default)"
    )
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "driver_cost.json")
    return parser.parse_args(argv)


def real_crops(count: int, folder: Path) -> list[Path]:
    """Copy the first ``count`` LFW-dev crops (sorted) into ``folder`` (same file system as the links)."""
    sources = sorted(LFW_IMAGES.glob("*/*.jpg"))[:count]
    if len(sources) < count:
        raise SystemExit(f"need {count} crops under {LFW_IMAGES}, found {len(sources)}")
    folder.mkdir(parents=True, exist_ok=True)
    crops = []
    for i, source in enumerate(sources):
        target = folder / f"crop{i}.jpg"
        shutil.copyfile(source, target)
        crops.append(target)
    return crops


def linked_inputs(crops: list[Path], links: Path, count: int) -> list[str]:
    """``count`` hard links ``links/<k // LINKS_PER_FOLDER>/<k>.jpg`` -> ``crops[k % len(crops)]`` (made once,
    reused by smaller sizes); returns their paths."""
    paths = []
    for k in range(count):
        folder = links / f"{k // LINKS_PER_FOLDER:04d}"
        if k % LINKS_PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{k:07d}.jpg"
        if not path.exists():
            os.link(crops[k % len(crops)], path)
        paths.append(str(path))
    return paths


def write_manifest(paths: list[str], target: Path) -> Path:
    pq.write_table(pa.table({"path": pa.array(paths, pa.string())}), target)
    return target


def make_student(folder: Path) -> Path:
    import torch

    from froq_ray.distill.artifact import save_student_artifact
    from froq_ray.distill.students import build_student

    torch.manual_seed(0)
    network = build_student("tiny_cnn", 32, {"width": 4})
    save_student_artifact(
        str(folder), network, {"target_column": "quality", "teacher": {"model_id": "bench@0"}}
    )
    return folder


def job_config(manifest: Path, out: Path, student: Path, address: str, shard_size: int | None) -> dict:
    output = {"uri": str(out), "mode": "overwrite", "progress_interval_s": 10}
    if shard_size:
        output["shard_size"] = shard_size
    return {
        "job": "annotate",
        "input": {"uri": str(manifest)},
        "scoring": {"mode": "student", "student_artifact": str(student)},
        "resources": {
            "ray_address": address,
            "actors": 1,
            "num_cpus_per_actor": 1,
            "decode_num_cpus": 0.5,
            "model_batch_size": 512,
        },
        "output": output,
    }


def vm_hwm_bytes(pid: int) -> int:
    """The kernel's high-water mark of ``pid``'s own RSS (``VmHWM`` in /proc/<pid>/status); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return 0


def run_driver(config: Path, log: Path) -> dict:
    """Run ``froq annotate --config config`` as a subprocess; the driver's exit code, wall seconds, CPU
    seconds and peak RSS (kernel rusage), and its sampled peak RSS."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "froq_ray.cli", "annotate", "--config", str(config)]
    started = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        hwm, stop = [0], threading.Event()

        def watch() -> None:  # VmHWM only grows: its last reading before exit is the driver's own peak
            while not stop.is_set():
                hwm[0] = max(hwm[0], vm_hwm_bytes(proc.pid))
                stop.wait(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with PeakSampler(proc.pid, interval=0.2) as sampler:
            _, status, usage = os.wait4(proc.pid, 0)
        stop.set()
        watcher.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_code": proc.returncode,
        "wall_s": round(time.perf_counter() - started, 2),
        "driver_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "driver_user_s": round(usage.ru_utime, 2),
        "driver_system_s": round(usage.ru_stime, 2),
        "driver_peak_rss_mib": round(hwm[0] / MIB, 1),
        "driver_peak_rss_sampled_mib": round(sampler.peak_root / MIB, 1),
        # wait4's ru_maxrss: the largest of the driver and the child processes it reaped (Linux, KiB)
        "rusage_maxrss_incl_children_mib": round(usage.ru_maxrss * 1024 / MIB, 1),
        "driver_tree_peak_rss_sampled_mib": round(sampler.peak_tree / MIB, 1),  # with any child processes
        "rss_samples": sampler.samples,
    }


def output_rows(out: Path) -> tuple[int, int]:
    """(rows recorded by the completion markers, Parquet rows in the parts) of an output folder."""
    from fsspec.implementations.local import LocalFileSystem

    marker_rows = sum(m["rows"] for m in read_markers(LocalFileSystem(), str(out)).values())
    part_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("part-*.parquet"))
    return marker_rows, part_rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sorted(args.sizes)
    work = args.work or Path(tempfile.mkdtemp(prefix="froq-driver-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    n_crops = max(args.crops, -(-sizes[-1] // LINKS_PER_CROP))
    crops = real_crops(n_crops, work / "crops")
    student = make_student(work / "student")

    from ray.cluster_utils import Cluster

    ray_temp = tempfile.mkdtemp(prefix="froq-dc-")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus, "temp_dir": ray_temp})
    results = []
    try:
        for size in sizes:
            made = time.perf_counter()
            paths = linked_inputs(crops, work / "links", size)
            manifest = write_manifest(paths, work / f"manifest-{size}.parquet")
            del paths
            prep_s = time.perf_counter() - made
            out = work / f"out-{size}"
            config = work / f"job-{size}.yaml"
            config.write_text(
                yaml.safe_dump(job_config(manifest, out, student, cluster.address, args.shard_size))
            )
            print(f"{size:>9,} rows: inputs ready in {prep_s:.1f} s; running the driver ...", flush=True)
            row = {"rows": size, **run_driver(config, work / f"driver-{size}.log")}
            row["rows_written"], row["rows_in_parts"] = output_rows(out)
            row["shards"] = len(list(out.glob("part-*.parquet")))
            row["rows_per_s"] = round(size / row["wall_s"], 1)
            results.append(row)
            print(
                f"{size:>9,} rows: exit {row['exit_code']}, driver peak RSS {row['driver_peak_rss_mib']} MiB, "
                f"driver CPU {row['driver_cpu_s']} s, wall {row['wall_s']} s",
                flush=True,
            )
            if row["exit_code"] != 0 or row["rows_written"] != size or row["rows_in_parts"] != size:
                print(
                    f"run of {size} rows failed or is incomplete; see {work / f'driver-{size}.log'}",
                    flush=True,
                )
                break
            shutil.rmtree(out)
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)

    report = summary(results, args, n_crops)
    print(table(results))
    if report["peak_rss_growth"] is not None:
        print(
            f"driver peak RSS growth {report['smallest_rows']:,} -> {report['largest_rows']:,} rows: "
            f"{100 * report['peak_rss_growth']:+.1f}% (target < {100 * TARGET_GROWTH:.0f}%)"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if results and all(r["exit_code"] == 0 for r in results) else 1


def summary(results: list[dict], args: argparse.Namespace, n_crops: int) -> dict:
    ok = [r for r in results if r["exit_code"] == 0]
    growth = None
    if len(ok) >= 2:
        growth = round(ok[-1]["driver_peak_rss_mib"] / ok[0]["driver_peak_rss_mib"] - 1.0, 4)
    return {
        "benchmark": "driver_cost",
        "what": (
            "peak RSS (VmHWM) and CPU seconds (rusage) of the froq annotate driver process, per input size"
        ),
        "target": f"driver peak RSS grows < {100 * TARGET_GROWTH:.0f}% from the smallest to the largest size",
        "smallest_rows": ok[0]["rows"] if ok else None,
        "largest_rows": ok[-1]["rows"] if ok else None,
        "peak_rss_growth": growth,
        "meets_target": None if growth is None else growth < TARGET_GROWTH,
        "setup": {
            "inputs": f"Parquet manifest of N distinct hard links to {n_crops} real LFW-dev crops (112 px JPEG)",
            "model": "student tiny_cnn, 32 px, width 4 (scoring.mode=student)",
            "cluster": f"local ray.cluster_utils.Cluster, one node with {args.cpus} CPUs, joined by the driver",
            "resources": {
                "actors": 1,
                "num_cpus_per_actor": 1,
                "decode_num_cpus": 0.5,
                "model_batch_size": 512,
            },
            "shard_size": args.shard_size or "config default",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
        },
        "runs": results,
    }


def table(results: list[dict]) -> str:
    head = (
        f"{'rows':>10} {'shards':>6} {'exit':>4} {'peak RSS MiB':>12} {'(sampled)':>9} "
        f"{'CPU s':>7} {'wall s':>7} {'rows/s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['rows']:>10,} {r['shards']:>6} {r['exit_code']:>4} {r['driver_peak_rss_mib']:>12.1f} "
            f"{r['driver_peak_rss_sampled_mib']:>9.1f} {r['driver_cpu_s']:>7.1f} {r['wall_s']:>7.1f} "
            f"{r['rows_per_s']:>8.1f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
