"""The review page in a real headless browser (system Chromium driven by Playwright): every image renders
(naturalWidth > 0, placeholders included) and the tiles per section match the filter output's counts."""

from __future__ import annotations

from collections import Counter

import pytest

from froq_ray.pipeline.review import run_review
from tests.browser import image_states, open_page
from tests.review_data import MERGES as MERGE_ROWS
from tests.review_data import ReviewPage, add_duplicates_and_merges, filtered_inputs, review_job

pytestmark = pytest.mark.integration


def test_every_image_of_the_review_page_renders_in_chromium(tmp_path):
    frame, summary = filtered_inputs(tmp_path)
    duplicates = add_duplicates_and_merges(tmp_path / "filter", frame)
    run_review(review_job(str(tmp_path / "ann"), str(tmp_path / "review"), str(tmp_path / "filter")))
    html = tmp_path / "review" / "index.html"
    parsed = ReviewPage(html.read_text())

    with open_page(html) as page:
        states = image_states(page)
        flagged = page.locator("#label_noise figure.subject").count()
        unreadable = page.locator("figure.unreadable").count()

    assert len(states) == sum(parsed.images.values()) > 0
    assert [
        s for s in states if not (s["complete"] and s["naturalWidth"] > 0 and s["naturalHeight"] > 0)
    ] == []
    per_section = Counter(s["section"] for s in states)
    assert per_section == parsed.images
    assert flagged == summary["label_noise_flagged"] >= 1
    assert per_section["duplicates"] == 2 * len(duplicates)
    ok = frame[frame.status == "ok"].identity.value_counts()
    pairs = MERGE_ROWS[["identity_a", "identity_b"]].to_numpy().ravel()
    assert per_section["merges"] == sum(min(4, ok[i]) for i in pairs)  # up to 4 (default) of each identity
    assert unreadable == len(parsed.unreadable) >= 2  # the two unshowable rows, drawn as placeholders
