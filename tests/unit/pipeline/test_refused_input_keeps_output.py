"""Evaluate, filter and review refuse some inputs only once they have read them (an unknown column, a preset
that does not exist, a filter output of other annotations). Such a refusal must leave the output as it was:
no run record in a new output (so the corrected run is not refused as "another run's output"), and under
``output.mode: overwrite`` the earlier run's files byte for byte (nothing deleted before the new results
exist)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from froq_ray.cli import main
from tests.unit.pipeline.test_evaluate_job import labelled, write_annotations


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_refusal(capsys, argv: list[str], job: str, message: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"froq {job}: error: "), err
    assert message in lines[0], lines[0]


@pytest.fixture
def annotations(tmp_path: Path) -> Path:
    write_annotations(tmp_path / "ann", labelled())
    return tmp_path / "ann"


@pytest.fixture
def other_filter_output(tmp_path: Path, capsys) -> Path:
    """A `froq filter` output of OTHER annotations (other paths): review refuses it beside ``annotations``."""
    other = tmp_path / "other"
    write_annotations(other, labelled()[:12], seed=3)
    for part in other.glob("*.parquet"):  # other paths: another folder name in every path
        table = pq.read_table(part)
        paths = [p.replace("/faces/", "/elsewhere/") for p in table.column("path").to_pylist()]
        table = table.set_column(table.column_names.index("path"), "path", pa.array(paths, pa.string()))
        pq.write_table(table, part)
    code = main(["filter", "--annotations", str(other), "--output", str(tmp_path / "other_filtered")])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return tmp_path / "other_filtered"


# (job, good arguments, arguments that make the job refuse after reading its input, words of the refusal)
CASES = {
    "evaluate": (
        ["--set", "evaluate.bootstrap=0"],
        ["--set", "evaluate.lower_is_better=[no_such_column]"],
        "evaluate.lower_is_better: 'no_such_column' is not an evaluated column",
    ),
    "filter": (
        [],
        ["--set", "filter.model_preset=no_such_model"],
        "filter.model_preset: no preset for 'no_such_model'",
    ),
    "review": (
        [],
        ["--filter", "{other_filter}"],
        "does not list the same images as the annotations",
    ),
}


def argv(job: str, annotations: Path, out: Path, extra: list[str], other_filter: Path) -> list[str]:
    return [
        job,
        "--annotations",
        str(annotations),
        "--output",
        str(out),
        *[a.replace("{other_filter}", str(other_filter)) for a in extra],
    ]


@pytest.mark.parametrize("job", sorted(CASES))
def test_a_refused_input_leaves_no_run_record_and_the_corrected_run_is_not_refused(
    job, tmp_path, annotations, other_filter_output, capsys
):
    good, bad, message = CASES[job]
    out = tmp_path / "out"
    one_line_refusal(capsys, argv(job, annotations, out, bad, other_filter_output), job, message)
    assert not out.exists()  # nothing created: not even the folder
    # the corrected run, in the default output.mode (error_if_exists), writes into the same folder
    assert main(argv(job, annotations, out, good, other_filter_output)) == 0, capsys.readouterr().err
    assert (out / "_froq" / "manifest.json").is_file()


@pytest.mark.parametrize("job", sorted(CASES))
def test_a_refused_overwrite_keeps_the_earlier_run_byte_for_byte(
    job, tmp_path, annotations, other_filter_output, capsys
):
    good, bad, message = CASES[job]
    out = tmp_path / "out"
    assert main(argv(job, annotations, out, good, other_filter_output)) == 0, capsys.readouterr().err
    before = snapshot(out)
    assert "_froq/manifest.json" in before and len(before) > 2
    overwrite = ["--set", "output.mode=overwrite", *bad]
    one_line_refusal(capsys, argv(job, annotations, out, overwrite, other_filter_output), job, message)
    assert snapshot(out) == before
