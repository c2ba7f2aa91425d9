"""Scale of the curation core on this box: class-centre sums and the blocked nearest-centre search.

Synthetic data: ``--identities`` identities x ``--images`` images, ``--dim``-d float32 embeddings,
clustered (image = unit identity direction + Gaussian noise of norm ~``--spread``, then L2-normalised),
generated chunk by chunk in identity-major order (as sorted identity folders give), seeded per chunk, so no
phase ever holds all embeddings. Each phase runs in its own child process so that its peak RSS is its own:

- ``centres``: stream every image through ``CentreSums.from_chunk`` + ``CentreAccumulator`` (the per-shard
  partial sums and the driver merge); time excludes generating the synthetic chunks (timed apart);
- ``search``: ``CentreIndex.score`` (leave-one-out CCS + blocked top-1 NNCCS over ALL centres) for the first
  ``--queries`` images; the cost is linear in the number of query images, so the whole set's time is
  extrapolated as time x (all images / queries).

- ``faiss``: the same nearest-other-centre search for the same queries with faiss (exact ``IndexFlatIP``,
  k=2, own centre dropped; ``froq_ray.curation.neighbours``), checked against the hand-written result; and the
  identity-merge search (``--queries`` centres range-searched against all centres at ``--merge-threshold``,
  extrapolated to all centres);
- ``dups_torch`` / ``dups_faiss``: the near-duplicate search, ``--dup-queries`` images against all images
  (hand-written: the blocked torch matmul of ``nearest_other_centre`` with the images as the matrix; faiss:
  ``DuplicateFinder``'s range search, threshold ``--dup-threshold``, float64 decision), extrapolated to all
  images.

Memory: peak RSS of the child (``resource.getrusage``) minus its RSS after imports, and the tracemalloc peak
(numpy allocations; torch's own allocator is not traced, so RSS is the number to read).

    nice -n 19 .venv/bin/python benchmarks/curation_scale.py          # 200k x 10, 512-d, writes docs/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
DEFAULT_OUT = REPO_ROOT / "docs" / "results" / "curation_scale.json"
CENTRES_FILE = REPO_ROOT / ".bench" / "curation_scale_centres.npz"
NEAREST_FILE = REPO_ROOT / ".bench" / "curation_scale_nearest.npy"
PHASES = ("centres", "search", "faiss", "dups_torch", "dups_faiss")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--identities", type=int, default=200_000)
    p.add_argument("--images", type=int, default=10, help="images per identity")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--spread", type=float, default=1.0, help="noise norm relative to the unit direction")
    p.add_argument("--chunk-identities", type=int, default=10_000, help="identities per generated chunk")
    p.add_argument("--queries", type=int, default=4096, help="images scored in the search phase")
    p.add_argument("--block-rows", type=int, default=4096)
    p.add_argument("--block-centres", type=int, default=65_536)
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--merge-threshold", type=float, default=0.5)
    p.add_argument("--dup-queries", type=int, default=1024, help="images searched in the duplicate phases")
    p.add_argument("--dup-threshold", type=float, default=0.95)
    p.add_argument("--skip-dups", action="store_true", help="leave out the two near-duplicate phases")
    p.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss_bytes() -> int:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def chunk(args: argparse.Namespace, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of identities [first, first + count): (embeddings float32, labels), seeded by ``first``."""
    rng = np.random.default_rng([args.seed, first])
    directions = rng.standard_normal((count, args.dim), dtype=np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    noise = rng.standard_normal((count, args.images, args.dim), dtype=np.float32)
    noise *= args.spread / np.sqrt(args.dim)
    x = (directions[:, None, :] + noise).reshape(count * args.images, args.dim)
    labels = np.repeat(np.array([f"id{first + k:08d}" for k in range(count)], dtype=object), args.images)
    return x, labels


def phase_centres(args: argparse.Namespace) -> dict[str, Any]:
    from froq_ray.curation.centres import CentreAccumulator, CentreSums

    base = rss_bytes()
    tracemalloc.start()
    accumulator = CentreAccumulator()
    generate_s = centres_s = 0.0
    for first in range(0, args.identities, args.chunk_identities):
        t0 = time.perf_counter()
        x, labels = chunk(args, first, min(args.chunk_identities, args.identities - first))
        t1 = time.perf_counter()
        accumulator.add(CentreSums.from_chunk(x, labels))
        centres_s += time.perf_counter() - t1
        generate_s += t1 - t0
        del x, labels
    t1 = time.perf_counter()
    sums = accumulator.result()
    table = sums.table()
    centres_s += time.perf_counter() - t1
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    CENTRES_FILE.parent.mkdir(exist_ok=True)
    np.savez(
        CENTRES_FILE,
        identities=table.identities.astype(str),
        directions=table.directions,
        norms=table.norms,
        counts=table.counts,
    )
    return {
        "images": int(sums.counts.sum()),
        "identities": len(sums),
        "centres_s": centres_s,
        "generate_s": generate_s,
        "sums_bytes": int(sums.sums.nbytes),
        "table_bytes": int(table.directions.nbytes + table.norms.nbytes + table.counts.nbytes),
        "peak_rss_delta_bytes": peak_rss_bytes() - base,
        "tracemalloc_peak_bytes": int(traced_peak),
    }


def _load_table() -> Any:
    from froq_ray.curation.centres import CentreTable

    saved = np.load(CENTRES_FILE)
    return CentreTable(
        saved["identities"].astype(object), saved["directions"], saved["norms"], saved["counts"]
    )


def phase_search(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from froq_ray.curation.classifiability import CentreIndex, nearest_other_centre

    base = rss_bytes()
    tracemalloc.start()
    table = _load_table()
    index = CentreIndex(table, "cpu", torch.float32, args.block_rows, args.block_centres)
    # the same first chunk as the centres phase (same seed, same size), so the queries are member images
    x, labels = chunk(args, 0, min(args.chunk_identities, args.identities))
    x, labels = x[: args.queries].copy(), labels[: args.queries].copy()
    t0 = time.perf_counter()
    scores = index.score(x, labels)
    score_s = time.perf_counter() - t0
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    own = table.index_of(labels)
    t0 = time.perf_counter()
    _, nearest = nearest_other_centre(
        unit, own, index.centres, args.block_rows, block_centres=args.block_centres
    )
    search_s = time.perf_counter() - t0
    np.save(NEAREST_FILE, nearest)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    flops = 2.0 * args.queries * len(table) * args.dim
    return {
        "queries": int(args.queries),
        "centres": len(table),
        "score_s": score_s,
        "nnccs_only_s": search_s,
        "nnccs_gflops": flops / search_s / 1e9,
        "ccs_median": float(np.nanmedian(scores.ccs)),
        "nnccs_median": float(np.nanmedian(scores.nnccs)),
        "tile_bytes": int(min(args.block_rows, args.queries) * min(args.block_centres, len(table)) * 4),
        "peak_rss_delta_bytes": peak_rss_bytes() - base,
        "tracemalloc_peak_bytes": int(traced_peak),
    }


def _queries(args: argparse.Namespace, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` images of the first chunk, L2-normalised (as the search phase takes them)."""
    from froq_ray.curation.centres import l2_normalise

    x, labels = chunk(args, 0, min(args.chunk_identities, args.identities))
    return l2_normalise(x[:count]), labels[:count].copy()


def phase_faiss(args: argparse.Namespace) -> dict[str, Any]:
    """faiss nearest other centre (k=2, own dropped) and the merge range search, beside the hand-written."""
    from froq_ray.curation.neighbours import InnerProductIndex

    base = rss_bytes()
    table = _load_table()
    unit, labels = _queries(args, args.queries)
    own = table.index_of(labels)
    t0 = time.perf_counter()
    index = InnerProductIndex(table.dim)
    index.add(table.directions)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    values, ids = index.index.search(unit, 2)
    first_is_own = ids[:, 0] == own
    nearest = np.where(first_is_own, ids[:, 1], ids[:, 0])
    search_s = time.perf_counter() - t0
    hand = np.load(NEAREST_FILE)
    merge_queries = min(args.queries, len(table))
    t0 = time.perf_counter()
    q, other, _ = index.range_pairs(table.directions[:merge_queries], args.merge_threshold)
    merge_s = time.perf_counter() - t0
    flops = 2.0 * args.queries * len(table) * args.dim
    return {
        "device": index.device,
        "build_s": build_s,
        "nnccs_only_s": search_s,
        "nnccs_gflops": flops / search_s / 1e9,
        "same_nearest_as_hand_written": int((nearest == hand).sum()),
        "queries": int(args.queries),
        "merge_queries": int(merge_queries),
        "merge_threshold": args.merge_threshold,
        "merge_pairs_found": int((other != q).sum()),
        "merge_s": merge_s,
        "merge_extrapolated_all_centres_s": merge_s * len(table) / merge_queries,
        "peak_rss_delta_bytes": peak_rss_bytes() - base,
    }


def _all_chunks(args: argparse.Namespace):
    for first in range(0, args.identities, args.chunk_identities):
        yield chunk(args, first, min(args.chunk_identities, args.identities - first))


def phase_dups_torch(args: argparse.Namespace) -> dict[str, Any]:
    """Hand-written: the blocked torch matmul + running top-1 of ``nearest_other_centre``, images as the
    matrix (the same flops as a thresholded search; one similarity tile at a time)."""
    import torch

    from froq_ray.curation.centres import l2_normalise
    from froq_ray.curation.classifiability import nearest_other_centre

    base = rss_bytes()
    n = args.identities * args.images
    images = np.empty((n, args.dim), dtype=np.float32)
    row = 0
    for x, _ in _all_chunks(args):
        images[row : row + len(x)] = l2_normalise(x)
        row += len(x)
    unit = images[: args.dup_queries].copy()
    t0 = time.perf_counter()
    nearest_other_centre(
        unit,
        np.arange(len(unit)),
        torch.from_numpy(images),
        args.block_rows,
        block_centres=args.block_centres,
    )
    search_s = time.perf_counter() - t0
    return {
        "images": n,
        "queries": int(args.dup_queries),
        "search_s": search_s,
        "extrapolated_all_images_s": search_s * n / args.dup_queries,
        "matrix_bytes": int(images.nbytes),
        "peak_rss_delta_bytes": peak_rss_bytes() - base,
    }


def phase_dups_faiss(args: argparse.Namespace) -> dict[str, Any]:
    """faiss: every image added chunk by chunk to an exact IndexFlatIP, then the range search of the queries."""
    from froq_ray.curation.centres import l2_normalise
    from froq_ray.curation.neighbours import InnerProductIndex

    base = rss_bytes()
    index = InnerProductIndex(args.dim)
    build_s = 0.0
    for x, _ in _all_chunks(args):
        unit = l2_normalise(x)
        t0 = time.perf_counter()
        index.add(unit)
        build_s += time.perf_counter() - t0
    queries = index.vectors()[: args.dup_queries].copy()
    t0 = time.perf_counter()
    q, ids, _ = index.range_pairs(queries, args.dup_threshold)
    search_s = time.perf_counter() - t0
    n = index.ntotal
    return {
        "device": index.device,
        "images": n,
        "queries": int(args.dup_queries),
        "threshold": args.dup_threshold,
        "pairs_found_excluding_self": int((ids != q).sum()),
        "build_s": build_s,
        "search_s": search_s,
        "extrapolated_all_images_s": search_s * n / args.dup_queries,
        "peak_rss_delta_bytes": peak_rss_bytes() - base,
    }


def run_phase(args: argparse.Namespace, phase: str, argv: list[str]) -> dict[str, Any]:
    env = {
        **os.environ,
        **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--phase", phase],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def step_row(
    step: str, phase: dict[str, Any], seconds_key: str, notes: str, *, peak: bool = True
) -> tuple[str, str, str, str]:
    """One row of the printed table: (step, time, peak RSS over baseline, notes). The time is
    ``phase[seconds_key]``; an extrapolated one (``seconds_key`` containing ``extrapolated``) is printed in
    whole seconds and the step is marked ``(extrapolated)``. The peak is the phase's ``peak_rss_delta_bytes``
    in MiB, or ``same`` (``peak=False``: the row reuses the measurement of the row above). Raises KeyError for
    a missing key."""
    if "extrapolated" in seconds_key:
        step, time_text = f"{step} (extrapolated)", f"{phase[seconds_key]:,.0f} s"
    else:
        time_text = f"{phase[seconds_key]:.1f} s"
    return step, time_text, mib(phase["peak_rss_delta_bytes"]) if peak else "same", notes


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.phase:
        import torch

        torch.set_num_threads(args.threads)
        phases = {
            "centres": phase_centres,
            "search": phase_search,
            "faiss": phase_faiss,
            "dups_torch": phase_dups_torch,
            "dups_faiss": phase_dups_faiss,
        }
        print(json.dumps(phases[args.phase](args)))
        return 0
    centres = run_phase(args, "centres", argv)
    search = run_phase(args, "search", argv)
    faiss_search = run_phase(args, "faiss", argv)
    dups = {} if args.skip_dups else {p: run_phase(args, p, argv) for p in ("dups_torch", "dups_faiss")}
    images = centres["images"]
    search["extrapolated_all_images_s"] = search["score_s"] * images / search["queries"]
    report = {
        "setting": {
            k: getattr(args, k)
            for k in (
                "identities",
                "images",
                "dim",
                "spread",
                "chunk_identities",
                "queries",
                "block_rows",
                "block_centres",
                "threads",
                "seed",
                "merge_threshold",
                "dup_queries",
                "dup_threshold",
            )
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "note": "shared 2-core box, nice 19",
        },
        "centres": centres,
        "search": search,
        "faiss": faiss_search,
        **dups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        step_row(
            "centre sums (stream + merge)",
            centres,
            "centres_s",
            f"{images:,} images -> {centres['identities']:,} centres; sums {mib(centres['sums_bytes'])}, "
            f"table {mib(centres['table_bytes'])}; data generation {centres['generate_s']:.1f} s more",
        ),
        step_row(
            f"score {search['queries']:,} images (CCS + NNCCS)",
            search,
            "score_s",
            f"NNCCS alone {search['nnccs_only_s']:.1f} s = {search['nnccs_gflops']:.1f} GFLOP/s; "
            f"tile {mib(search['tile_bytes'])}",
        ),
        step_row(
            f"score all {images:,} images",
            search,
            "extrapolated_all_images_s",
            "linear in images",
            peak=False,
        ),
        step_row(
            f"faiss: nearest other centre of {faiss_search['queries']:,} images",
            faiss_search,
            "nnccs_only_s",
            f"hand-written {search['nnccs_only_s']:.1f} s; {faiss_search['nnccs_gflops']:.1f} GFLOP/s; "
            f"same nearest for {faiss_search['same_nearest_as_hand_written']:,} of {faiss_search['queries']:,}; "
            f"index build {faiss_search['build_s']:.1f} s ({faiss_search['device']})",
        ),
        step_row(
            f"faiss: identity merges, all {centres['identities']:,} centres",
            faiss_search,
            "merge_extrapolated_all_centres_s",
            f"{faiss_search['merge_queries']:,} centres range-searched in {faiss_search['merge_s']:.1f} s "
            f"at cosine >= {args.merge_threshold}: {faiss_search['merge_pairs_found']} pairs",
            peak=False,
        ),
    ]
    if dups:
        torch_d, faiss_d = dups["dups_torch"], dups["dups_faiss"]
        rows += [
            step_row(
                f"hand-written: near-duplicates, all {images:,} images",
                torch_d,
                "extrapolated_all_images_s",
                f"{torch_d['queries']:,} queries vs all images in {torch_d['search_s']:.1f} s; "
                f"image matrix {mib(torch_d['matrix_bytes'])}",
            ),
            step_row(
                f"faiss: near-duplicates, all {images:,} images",
                faiss_d,
                "extrapolated_all_images_s",
                f"{faiss_d['queries']:,} queries in {faiss_d['search_s']:.1f} s at cosine >= "
                f"{args.dup_threshold}: {faiss_d['pairs_found_excluding_self']} pairs; index build "
                f"{faiss_d['build_s']:.1f} s",
            ),
        ]
    print(f"| step ({args.dim}-d, {args.threads} thread(s)) | time | peak RSS over baseline | notes |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
