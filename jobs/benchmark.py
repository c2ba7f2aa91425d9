"""`python jobs/benchmark.py --arch adaface_ir101 --n 2000 --out docs/results/throughput.json`: thin entrypoint
(see froq_ray/bench/throughput.py; also runs under `ray job submit --working-dir . -- python jobs/benchmark.py`)."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # the working dir, when froq_ray is not installed

from froq_ray.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
