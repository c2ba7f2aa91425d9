"""Screenshots of a `froq review` page in the OS's Chromium (Playwright): docs/review-*.png.

    .venv/bin/python benchmarks/review_screenshots.py out/lfw-dev-review [--out docs]

writes ``review-overview.png`` (the top of the page: summary and sections), ``review-lowest.png`` (the lowest-
quality section) and ``review-label-noise.png`` (the label-noise section: each flag beside its own and nearest
identity), and prints how many images the page has and how many did not render (must be 0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser import image_states, open_page  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("review", type=Path, help="a froq review output folder (its index.html)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with open_page(args.review / "index.html", width=1400, height=1100) as page:
        states = image_states(page)
        broken = [s for s in states if not (s["complete"] and s["naturalWidth"] > 0)]
        page.screenshot(path=str(args.out / "review-overview.png"))
        for key, name in (("lowest", "review-lowest.png"), ("label_noise", "review-label-noise.png")):
            page.locator(f"#{key}").screenshot(path=str(args.out / name))
    print(f"{len(states)} images on the page, {len(broken)} not rendered; screenshots in {args.out}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
