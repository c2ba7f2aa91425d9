"""`ray job submit --working-dir . -- python jobs/review.py --config configs/review.yaml`: thin entrypoint."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # the working dir, when froq_ray is not installed

from froq_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["review", *sys.argv[1:]]))
