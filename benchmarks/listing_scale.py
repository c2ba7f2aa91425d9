"""Listing an s3:// prefix on the driver: today's ``list_inputs`` vs ``engine.inputs.materialize_inputs``.

A moto S3 server runs on 127.0.0.1 in its own process (so its memory and CPU are not the driver's), holding
``--n`` tiny objects spread over ``--prefixes`` prefixes (``in/p000/img000000.jpg`` ..., plus one ``notes.txt``
per prefix that the extension filter skips; put straight into moto's backend, no HTTP per object). Each method
is measured in a fresh child process (own s3fs cache, own peak RSS; the s3fs client is built before measuring):

- ``list_inputs``: :func:`froq_ray.storage.listing.list_inputs` on the prefix (the whole listing on the driver);
- ``materialize_inputs``: :func:`froq_ray.engine.inputs.materialize_inputs` into ``s3://.../out`` on a local Ray
  (``num_cpus=2``, started before the measurement): the driver makes one ``ls``, Ray tasks list the prefixes
  and write the Parquet parts, the driver writes ``plan.json``.

Driver numbers per method: wall seconds, driver CPU seconds (``time.process_time`` of the driver process: all
its threads, Ray's core-worker threads included), peak RSS minus RSS just before the call, and, in a second
run of the same child with ``tracemalloc`` on (it slows Python allocations, so that run's times are not
reported), the peak traced Python heap. Prints a table and writes ``docs/results/listing_scale.json``.

    python -m benchmarks.listing_scale              # 100k objects over 100 prefixes
    python -m benchmarks.listing_scale --n 3000     # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "docs" / "results" / "listing_scale.json"
BUCKET = "listing-bench"
METHODS = ("list_inputs", "materialize_inputs")
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="objects to list")
    p.add_argument("--prefixes", type=int, default=100, help="top-level prefixes the objects are spread over")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def storage_options(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def rss_bytes() -> int:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# ------------------------------------------------------------------------------------------------ child


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One method, in this (child) process: driver wall/CPU/RSS, or the traced heap peak with ``--trace``."""
    import fsspec

    from froq_ray.config import InputConfig

    opts = storage_options(args.endpoint)
    cfg = InputConfig(uri=f"s3://{BUCKET}/in", storage_options=opts)
    warm = fsspec.filesystem("s3", **opts)  # the instance open_fs returns: build its client before measuring
    warm.ls(BUCKET)
    warm.invalidate_cache()
    if args.method == "list_inputs":
        from froq_ray.storage.listing import list_inputs

        def call() -> int:
            return len(list_inputs(cfg).table)
    else:
        import ray

        from froq_ray.engine.inputs import materialize_inputs

        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
        )

        def call() -> int:
            return materialize_inputs(cfg, warm, f"{BUCKET}/out", reuse=False).total_rows

    rss0 = rss_bytes()
    if args.trace:
        tracemalloc.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    rows = call()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    result: dict[str, Any] = {"method": args.method, "rows": rows}
    if args.trace:
        result["heap_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        result.update(
            wall_s=wall,
            driver_cpu_s=cpu,
            peak_rss_delta_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0,
        )
    return result


# ------------------------------------------------------------------------------------------------ parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(args: argparse.Namespace) -> None:
    """Child: a moto S3 server on 127.0.0.1:``--serve``, populated in-process (``put_object`` on moto's
    backend: no HTTP per object) with :func:`object_keys`; prints ``ready <seconds>`` and serves until stdin
    closes."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.serve, verbose=False)
    server.start()
    t0 = time.perf_counter()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, CREDENTIALS["AWS_DEFAULT_REGION"])
    for key in object_keys(args.n, args.prefixes):
        backend.put_object(BUCKET, key, b"\xff\xd8\xff")
    print(f"ready {time.perf_counter() - t0:.3f}", flush=True)
    sys.stdin.read()
    server.stop()


def object_keys(n: int, prefixes: int) -> list[str]:
    """``n`` image keys ``in/p###/img######.jpg`` round-robin over ``prefixes`` prefixes, plus one
    ``notes.txt`` per prefix (skipped by the extension filter)."""
    keys = [f"in/p{i % prefixes:03d}/img{i:06d}.jpg" for i in range(n)]
    return keys + [f"in/p{i:03d}/notes.txt" for i in range(min(prefixes, n))]


def start_moto(args: argparse.Namespace, port: int) -> tuple[subprocess.Popen, float]:
    """The populated moto server process and the seconds it took to populate."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.listing_scale",
        "--serve",
        str(port),
        "--n",
        str(args.n),
        "--prefixes",
        str(args.prefixes),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"the moto server did not start: {line!r}")
    return proc, float(line.split()[1])


def run_child(method: str, endpoint: str, trace: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.listing_scale", "--method", method, "--endpoint", endpoint]
    env = {
        **os.environ,
        **CREDENTIALS,
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    done = subprocess.run(
        cmd + (["--trace"] if trace else []),
        cwd=REPO_ROOT,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, Any]], n: int) -> str:
    header = ("method", "rows", "wall s", "driver CPU s", "heap peak MiB", "B/object", "RSS delta MiB")
    lines = ["{:<20} {:>8} {:>8} {:>13} {:>14} {:>9} {:>14}".format(*header)]
    for method, r in results.items():
        lines.append(
            f"{method:<20} {r['rows']:>8} {r['wall_s']:>8.2f} {r['driver_cpu_s']:>13.2f} "
            f"{r['heap_peak_bytes'] / 2**20:>14.1f} {r['heap_peak_bytes'] / n:>9.0f} "
            f"{r['peak_rss_delta_bytes'] / 2**20:>14.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.method:
        print(json.dumps(measure(args)))
        return 0
    if args.serve:
        serve(args)
        return 0
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server, put_s = start_moto(args, port)
    try:
        results: dict[str, dict[str, Any]] = {}
        for method in METHODS:
            timed = run_child(method, endpoint, trace=False)
            traced = run_child(method, endpoint, trace=True)
            results[method] = {**timed, "heap_peak_bytes": traced["heap_peak_bytes"]}
            print(f"  {method}: {results[method]}", file=sys.stderr, flush=True)
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    rows = {r["rows"] for r in results.values()}
    assert rows == {args.n}, f"both methods must list the {args.n} images, got {rows}"
    today, new = results["list_inputs"], results["materialize_inputs"]
    summary = {
        "wall_ratio_new_over_today": new["wall_s"] / today["wall_s"],
        "heap_ratio_new_over_today": new["heap_peak_bytes"] / today["heap_peak_bytes"],
        "heap_bytes_per_object_today": today["heap_peak_bytes"] / args.n,
        "heap_bytes_per_object_new": new["heap_peak_bytes"] / args.n,
    }
    report = {
        "objects": args.n,
        "prefixes": args.prefixes,
        "non_image_objects": min(args.prefixes, args.n),
        "populate_s": put_s,
        "results": results,
        "summary": summary,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1m_at_end": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "notes": "moto server in its own process on 127.0.0.1; each method in a fresh child process; heap = "
        "tracemalloc peak in a second run (times from the untraced run); materialize_inputs on a local "
        "Ray with num_cpus=2 writing parts to s3://listing-bench/out/_froq/inputs.",
    }
    print(table(results, args.n))
    print(
        f"new/today: wall {summary['wall_ratio_new_over_today']:.2f}x, "
        f"driver heap {summary['heap_ratio_new_over_today']:.1%}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
