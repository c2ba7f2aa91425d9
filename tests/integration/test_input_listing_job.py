"""End to end on a real local Ray cluster: a local input folder with a file name that is not UTF-8, a GIF,
a symlinked folder, a broken link and a non-image file. Every image is one output row (the undecodable
name as its percent-encoded file:// rendering), and what the listing skipped is in the log-free places a
user reads: the run manifest's ``input`` section and ``froq plan``."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from froq_ray import status as st
from tests.integration.jobfiles import (
    FAST_PERTURBATIONS,
    SMALL_RESOURCES,
    lfw_sample,
    read_json_uri,
    read_output,
    run_job,
    write_config,
)

pytestmark = pytest.mark.integration


@pytest.mark.usefixtures("ray_cluster")
def test_annotate_lists_every_image_once_and_reports_skips(lfw_dev_dir, mobilefacenet_pt, tmp_path, capsys):
    first, second, third = lfw_sample(lfw_dev_dir, identities=3, per_identity=1)
    root = tmp_path / "in"
    (root / "P").mkdir(parents=True)
    (root / "P" / "a.jpg").write_bytes(first.read_bytes())
    fd = os.open(os.fsencode(root / "P") + b"/caf\xe9.jpg", os.O_CREAT | os.O_WRONLY)  # Latin-1 name
    os.write(fd, first.read_bytes())
    os.close(fd)
    gif = io.BytesIO()
    Image.open(second).save(gif, format="GIF")
    (root / "P" / "b.gif").write_bytes(gif.getvalue())
    (root / "notes.txt").write_text("not an image")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "c.jpg").write_bytes(third.read_bytes())
    (root / "linked").symlink_to(outside)
    (root / "broken.jpg").symlink_to(tmp_path / "gone.jpg")

    out_uri = str(tmp_path / "out")
    config = write_config(
        tmp_path,
        "ann",
        {
            "job": "annotate",
            "input": {"uri": str(root), "identity_from_folder": True},
            "model": {"name": "mobilefacenet", "weights": str(mobilefacenet_pt)},
            "scoring": {"mode": "pseudo_label", "perturbation": FAST_PERTURBATIONS},
            "resources": {k: v for k, v in SMALL_RESOURCES.items() if k != "progress_interval_s"},
            "output": {"uri": out_uri, "progress_interval_s": 1},
        },
    )
    assert run_job("plan", config) == 0
    plan = capsys.readouterr().out
    assert "inputs: 4 images from" in plan
    assert (
        f"inputs skipped 2 file(s): broken_symlink=1 ({root}/broken.jpg); extension=1 (.txt=1); "
        "0 duplicate manifest row(s) merged; 1 symlinked folder(s) followed; 0 beyond input.limit"
    ) in plan

    assert run_job("annotate", config) == 0
    out = read_output(out_uri).sort_values("path").reset_index(drop=True)
    latin1 = f"file://{root}/P/caf%E9.jpg"
    assert out["path"].tolist() == [f"{root}/P/a.jpg", f"{root}/P/b.gif", f"{root}/linked/c.jpg", latin1]
    assert out["identity"].tolist() == ["P", "P", "linked", "P"]
    assert out["status"].tolist() == [st.OK] * 4, out["error"].tolist()
    by_path = dict(zip(out["path"], out["quality"], strict=True))
    assert by_path[latin1] == pytest.approx(by_path[f"{root}/P/a.jpg"], rel=1e-5)  # the same bytes

    manifest = read_json_uri(f"{out_uri}/_froq/manifest.json")["results"]
    assert manifest["input"]["images"] == 4
    assert manifest["input"]["source"] == "folder" and manifest["input"]["files_seen"] == 6
    assert manifest["input"]["followed_links"] == 1 and manifest["input"]["duplicates"] == 0
    assert manifest["input"]["skipped"] == {
        "total": 2,
        "by_reason": {
            "broken_symlink": {"count": 1, "examples": [f"{root}/broken.jpg"]},
            "extension": {"count": 1, "examples": [f"{root}/notes.txt"], "by_extension": {".txt": 1}},
        },
    }
