"""Inputs of the review tests: real JPEG faces in identity folders, their annotation Parquet (embeddings, quality),
a real ``froq filter`` output of it, and the merge / duplicate files a filter may add; plus an HTML parser that
counts the page's tiles per section.

Identities ``Identity_0`` .. ``Identity_5``, 3 images each (18 ok rows, 8-d embeddings around one centre per
identity); ``Identity_0_0004.jpg`` is really ``Identity_1`` (filed under ``Identity_0``: the filter flags it, its
nearest identity is ``Identity_1``); one corrupt row (no file, status ``corrupt``); two ok rows whose image cannot
be shown: ``Identity_5_0009.jpg`` (deleted after annotation) and ``Identity_5_0010.jpg`` (bytes that are not an
image). Those two have the lowest qualities, so the lowest-quality section shows them as placeholders.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from froq_ray.config import config_from_dict
from froq_ray.pipeline.filter import run_filter
from froq_ray.pipeline.review import DUPLICATES
from froq_ray.pipeline.review import MERGES as MERGES_FILE
from froq_ray.storage.schema import annotation_schema, to_table
from tests.data_factory import write_identity_tree

DIM = 8
UNSHOWABLE = ("Identity_5/Identity_5_0009.jpg", "Identity_5/Identity_5_0010.jpg")
MERGES = pd.DataFrame(
    {
        "identity_a": ["Identity_2", "Identity_3"],
        "identity_b": ["Identity_4", "Identity_5"],
        "cosine": [0.7, 0.9],
    }
)


def annotation_frame(images: Path, prefix: str | None = None) -> pd.DataFrame:
    """The annotation rows of the tree under ``images`` (module doc); paths are ``prefix/<rel>`` when given."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(6, DIM))
    rows = []
    for path in sorted(images.rglob("*.jpg")):
        rel = path.relative_to(images).as_posix()
        identity = path.parent.name
        k = int(identity.rsplit("_", 1)[1])
        truth = 1 if rel == "Identity_0/Identity_0_0004.jpg" else k
        rows.append((rel, identity, "ok", None, centres[truth] + 0.2 * rng.normal(size=DIM)))
    rows.append(
        ("Identity_4/Identity_4_0099.jpg", "Identity_4", "corrupt", "truncated", np.full(DIM, np.nan))
    )
    frame = pd.DataFrame(rows, columns=["rel", "identity", "status", "error", "embedding"])
    quality = np.round(rng.uniform(1.0, 2.0, len(frame)), 1)  # ties on purpose
    quality[frame["rel"].isin(UNSHOWABLE).to_numpy()] = [0.1, 0.2]
    quality[frame["status"].to_numpy() != "ok"] = np.nan
    frame["quality"] = quality.astype(np.float32)
    base = prefix if prefix is not None else str(images)
    frame["path"] = [f"{base}/{rel}" for rel in frame["rel"]]
    return frame


def write_images(images: Path) -> None:
    """The JPEG tree, plus the two unshowable rows' files (one later deleted, one not an image)."""
    write_identity_tree(images, identities=6, per_identity=3)
    mislabelled = (images / "Identity_1" / "Identity_1_0001.jpg").read_bytes()  # a copy of Identity_1's face
    (images / "Identity_0" / "Identity_0_0004.jpg").write_bytes(mislabelled)
    (images / UNSHOWABLE[0]).write_bytes((images / "Identity_5" / "Identity_5_0001.jpg").read_bytes())
    (images / UNSHOWABLE[1]).write_bytes(b"this is not an image\n")


def write_annotations(
    frame: pd.DataFrame, out: Path | str, fs=None, extra: dict[str, np.ndarray] | None = None
) -> None:
    """``frame`` as one annotate part (``out/part-00000.parquet``), locally or on ``fs``; ``extra`` columns
    (e.g. ``quality_percentile``) are appended."""
    schema = annotation_schema(DIM)
    columns = {f.name: frame[f.name].tolist() if f.name in frame else [None] * len(frame) for f in schema}
    columns["embedding"] = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
    table = to_table(columns, schema)
    for name, values in (extra or {}).items():
        table = table.append_column(name, pa.array(values, pa.float32()))
    if fs is None:
        Path(out).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, Path(out) / "part-00000.parquet")
    else:
        with fs.open(f"{out}/part-00000.parquet", "wb") as f:
            pq.write_table(table, f)


def run_filter_on(annotations: str, out: str, storage_options: dict | None = None) -> dict:
    """The real filter job on ``annotations`` (flags reported, not dropped); returns its summary."""
    job = config_from_dict(
        {
            "job": "filter",
            "filter": {
                "annotations": annotations,
                "classifiability": {"device": "cpu"},
                "policies": {"label_noise": {"drop": False}},
                "storage_options": storage_options or {},
            },
            "output": {"uri": out, "mode": "overwrite", "storage_options": storage_options or {}},
        }
    )
    return run_filter(job)


def duplicates_frame(paths: list[str]) -> pd.DataFrame:
    """Three near-duplicate pairs among ``paths`` (as the filter would write them)."""
    return pd.DataFrame({"path_a": paths[0:3], "path_b": paths[3:6], "cosine": [0.97, 0.99, 0.98]})


def filtered_inputs(root: Path) -> tuple[pd.DataFrame, dict]:
    """The local review inputs under ``root``: the JPEG tree ``images`` (module doc; the first unshowable file
    is deleted after it was annotated), its annotations ``ann`` and the real filter output ``filter``. Returns
    the annotation frame and the filter's summary."""
    images = root / "images"
    write_images(images)
    frame = annotation_frame(images)
    write_annotations(frame, root / "ann")
    (images / UNSHOWABLE[0]).unlink()
    return frame, run_filter_on(str(root / "ann"), str(root / "filter"))


def add_duplicates_and_merges(filter_out: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Write :func:`duplicates_frame` of ``frame``'s paths and :data:`MERGES` into the filter output
    ``filter_out``, as a filter with those checks would; returns the duplicate pairs."""
    duplicates = duplicates_frame(frame.path.tolist())
    duplicates.to_parquet(filter_out / DUPLICATES)
    MERGES.to_parquet(filter_out / MERGES_FILE)
    return duplicates


def review_job(
    annotations: str, out: str, filter_uri: str | None = None, mode: str = "error_if_exists", **review
):
    """A review job config on small section sizes (5 extremes, 4 bands of 3); ``review`` overrides."""
    return config_from_dict(
        {
            "job": "review",
            "review": {
                "annotations": annotations,
                "filter": filter_uri,
                "extremes": 5,
                "bands": 4,
                "per_band": 3,
                **review,
            },
            "output": {"uri": out, "mode": mode},
        }
    )


class ReviewPage(HTMLParser):
    """Tiles of a review page: per section id, the roles of its figures (``roles[id]``), the number of ``img``
    (``images[id]``), its ``data-count`` / ``data-shown``, whether it says it is absent, and the unreadable
    tiles' paths."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.roles: dict[str, Counter] = defaultdict(Counter)
        self.images: Counter = Counter()
        self.count: dict[str, int] = {}
        self.shown: dict[str, int] = {}
        self.absent: set[str] = set()
        self.unreadable: list[str] = []
        self.image_sources: list[str] = []
        self._section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "section" and "review" in classes:
            self._section = a["id"]
            self.count[a["id"]] = int(a["data-count"])
            self.shown[a["id"]] = int(a["data-shown"])
        elif tag == "figure" and self._section:
            self.roles[self._section][classes[1]] += 1
            if "unreadable" in classes:
                self.unreadable.append(a["data-path"])
        elif tag == "img" and self._section:
            self.images[self._section] += 1
            self.image_sources.append(a["src"])
        elif tag == "p" and "absent" in classes and self._section:
            self.absent.add(self._section)

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
