"""A real headless browser for the review page tests and screenshots: the OS's Chromium driven by Playwright.

Nothing is downloaded: Playwright (pip, the ``dev`` extra) launches the system Chromium (Debian's ``chromium``
package, installed by ``scripts/setup.sh``) through ``executable_path``. :func:`chromium_executable` finds it
(``FROQ_CHROMIUM`` overrides) and fails naming the install step when it is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
IMAGE_STATE = """() => Array.from(document.images).map(img => ({
    section: img.closest('section') ? img.closest('section').id : null,
    complete: img.complete,
    naturalWidth: img.naturalWidth,
    naturalHeight: img.naturalHeight,
}))"""
"""JavaScript run in the page: every image's section id, load state and decoded (natural) size."""


def chromium_executable() -> str:
    """The system Chromium's path (``$FROQ_CHROMIUM`` or the first of :data:`CANDIDATES` on ``PATH``); raises
    ``FileNotFoundError`` naming the install step when there is none."""
    override = os.environ.get("FROQ_CHROMIUM")
    if override:
        return override
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        f"no Chromium on PATH (looked for {', '.join(CANDIDATES)}): run scripts/setup.sh "
        "(apt-get install chromium) or set FROQ_CHROMIUM"
    )


@contextmanager
def open_page(path: Path, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page showing the local HTML file ``path`` (loaded: every image decoded or failed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            yield page
        finally:
            browser.close()


def image_states(page: Any) -> list[dict[str, Any]]:
    """Per ``<img>`` of the page, in document order: ``section``, ``complete``, ``naturalWidth``,
    ``naturalHeight``."""
    return page.evaluate(IMAGE_STATE)
