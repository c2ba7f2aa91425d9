"""Bad inputs found by a new-user test: each is one clear line, and nothing is created."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from froq_ray.cli import main
from froq_ray.storage.annotations import AnnotationInputError, annotation_files, read_table
from tests.unit.pipeline.test_filter_job import annotation_rows, write_annotations

JOB_FLAGS = {
    "filter": ["--annotations"],
    "evaluate": ["--annotations"],
    "review": ["--annotations"],
    "export": ["--keep-list"],
}


def png(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def one_line(capsys, job: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"froq {job}: error: ") and "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("job", sorted(JOB_FLAGS))
def test_a_file_that_is_not_parquet_is_one_line_and_creates_no_output(job, tmp_path, capsys):
    bad = png(tmp_path / "some.png")
    out = tmp_path / "o"
    assert main([job, *JOB_FLAGS[job], str(bad), "--output", str(out)]) == 2
    line = one_line(capsys, job)
    assert f"{bad}: not a readable Parquet file (Parquet magic bytes not found" in line
    assert not out.exists()  # no folder holding only _froq/run.json


@pytest.mark.parametrize("job", sorted(JOB_FLAGS))
def test_every_part_of_a_folder_is_checked_before_the_output_opens(job, tmp_path, capsys):
    folder = tmp_path / "ann"
    write_annotations(folder, annotation_rows())  # part-00000 and part-00001, both good
    bad = folder / "part-00002.parquet"
    bad.write_bytes(b"")  # an empty part, read after the good ones
    out = tmp_path / "o"
    assert main([job, *JOB_FLAGS[job], str(folder), "--output", str(out)]) == 2
    line = one_line(capsys, job)
    assert f"{bad}: not a readable Parquet file (Parquet file size is 0 bytes)" in line
    assert not out.exists()


def test_the_reader_names_the_file_it_cannot_read(tmp_path):
    good = tmp_path / "ann"
    parts = write_annotations(good, annotation_rows())
    files = annotation_files([str(good)], None)
    assert [f.path for f in files] == [str(p) for p in parts]
    assert read_table(files[0], ["path"]).column("path").to_pylist() == annotation_rows()["path"][:6].tolist()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(parts[0].read_bytes()[:-20])
    with pytest.raises(AnnotationInputError, match=rf"^{truncated}: not a readable Parquet file \("):
        annotation_files([str(truncated)], None)
    parts[1].write_bytes(b"not parquet")  # replaced after listing: read_table says it too
    with pytest.raises(AnnotationInputError, match=rf"^{parts[1]}: not a readable Parquet file \("):
        read_table(files[1], ["path"])
