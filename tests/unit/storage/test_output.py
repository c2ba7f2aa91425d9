"""One output lifecycle: every job's output layout goes through ``storage.output.open_output``, and
error_if_exists / overwrite / resume behave the same way for each (parametrised over all jobs). A ``listed``
layout (export: file names from the input) also refuses files no run of it listed, so its foreign file here lies
in ``_froq/``; a shard layout refuses top-level files a Parquet reader would take for parts, so its foreign file
starts with ``_``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from froq_ray.errors import UserError
from froq_ray.pipeline import annotate, calibrate, distill, evaluate, export, review, self_training
from froq_ray.pipeline import filter as filter_job
from froq_ray.storage.location import Location
from froq_ray.storage.manifest import RunManifest, write_manifest
from froq_ray.storage.output import (
    SHARD_JOBS,
    OutputLayout,
    discard_listed_shards,
    open_output,
    record_files,
)
from froq_ray.storage.run_state import LEGACY_FILES, OutputStateError

LAYOUTS = {
    "annotate": annotate.OUTPUT,
    "calibrate": calibrate.OUTPUT,
    "self_training": self_training.OUTPUT,
    "distill": distill.OUTPUT,
    "evaluate": evaluate.OUTPUT,
    "filter": filter_job.OUTPUT,
    "export": export.OUTPUT,
    "review": review.OUTPUT,
}
CFG, INP = "c" * 64, "i" * 64
LISTED = "Some_One/a.jpg"  # a file a listed layout's shard names before writing it


def foreign(layout: OutputLayout) -> str:
    """A file no job writes: never touched (in ``_froq/`` for a listed layout, which refuses it elsewhere;
    underscore-prefixed for a shard layout, which refuses top-level files Parquet readers would read)."""
    return "_froq/notes.txt" if layout.listed else "_notes.txt" if layout.shards else "notes.txt"


def open_(out: Path, mode: str, layout: OutputLayout, cfg: str = CFG, **kwargs):
    return open_output(Location(str(out)), mode, layout, config_digest=cfg, input_digest=INP, **kwargs)


def finished_run(out: Path, layout: OutputLayout) -> dict[str, bytes]:
    """Write what a finished run of ``layout.job`` leaves (through ``open_output``, as the job does); returns
    every file under ``out`` with its bytes."""
    state = open_(out, "resume", layout)
    for name in current_files(layout):
        if name.endswith(".json"):
            (out / name).write_text(json.dumps({"job": layout.job, "name": name}))
        elif "." in name:
            (out / name).write_bytes(f"{layout.job} {name}".encode())
        else:  # a folder (checkpoints, copies, images)
            (out / name).mkdir()
            (out / name / "inside.bin").write_bytes(b"x")
    files = [LISTED, "part-00000.parquet"] if layout.listed else []
    if layout.listed:
        record_files(state, 0, files)
        (out / LISTED).parent.mkdir()
        (out / LISTED).write_bytes(b"listed")
    if layout.shards:
        (out / "part-00000.parquet").write_bytes(b"PAR1 part")
        marker = {"start": 0, "stop": 1, **({"files": files} if layout.listed else {})}
        (out / "_froq" / "part-00000.done.json").write_text(json.dumps(marker))
    write_manifest(Location(str(out)), RunManifest(layout.job, "2026-01-01T00:00:00Z", {}, CFG))
    (out / foreign(layout)).write_text("mine")
    return snapshot(out)


def current_files(layout: OutputLayout) -> list[str]:
    """The files a run of this version writes (not where older versions wrote their records)."""
    return [n for n in layout.files if n not in LEGACY_FILES]


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def owned_names(layout: OutputLayout) -> set[str]:
    names = {"_froq/run.json", "_froq/manifest.json"}
    for name in current_files(layout):
        names.add(name if "." in name else f"{name}/inside.bin")
    if layout.shards:
        names |= {"part-00000.parquet", "_froq/part-00000.done.json"}
    if layout.listed:
        names |= {LISTED, "_froq/files-00000.json"}
    return names


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request) -> OutputLayout:
    return LAYOUTS[request.param]


def test_every_job_declares_its_layout_with_its_own_name(layout):
    assert layout.job in LAYOUTS and LAYOUTS[layout.job] is layout


def test_error_if_exists_refuses_a_finished_run_naming_the_path_and_the_key(layout, tmp_path):
    out = tmp_path / "out"
    before = finished_run(out, layout)
    assert set(before) == owned_names(layout) | {foreign(layout)}
    with pytest.raises(OutputStateError) as refused:
        open_(out, "error_if_exists", layout)
    message = str(refused.value)
    assert isinstance(refused.value, UserError) and "\n" not in message
    assert message.startswith(f"output {out} already holds ") and "output.mode" in message
    assert snapshot(out) == before  # nothing touched


def test_error_if_exists_accepts_a_folder_of_foreign_files(layout, tmp_path):
    out = tmp_path / "out"
    (out / foreign(layout)).parent.mkdir(parents=True)
    (out / foreign(layout)).write_text("mine")
    state = open_(out, "error_if_exists", layout)
    assert not state.resumed and not state.finished
    assert sorted(snapshot(out)) == sorted(["_froq/run.json", foreign(layout)])


def test_overwrite_replaces_only_what_the_job_owns(layout, tmp_path):
    out = tmp_path / "out"
    finished_run(out, layout)
    state = open_(out, "overwrite", layout)
    assert not state.resumed and not state.finished and not state.markers
    after = snapshot(out)
    assert sorted(after) == sorted(["_froq/run.json", foreign(layout)])
    assert after[foreign(layout)] == b"mine"
    # folders the job's files left empty go too
    assert sorted(p.name for p in out.iterdir()) == sorted({"_froq", foreign(layout).split("/")[0]})
    assert json.loads(after["_froq/run.json"])["job"] == layout.job


def test_resume_after_a_finished_run_does_nothing(layout, tmp_path):
    out = tmp_path / "out"
    before = finished_run(out, layout)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    state = open_(out, "resume", layout)
    assert state.finished and state.resumed and not state.forced
    assert state.completed == (frozenset({0}) if layout.shards else frozenset())
    assert snapshot(out) == before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_resume_of_another_config_refuses_or_recomputes_by_the_layout(layout, tmp_path):
    """The one legitimate difference: a job with partial state refuses to mix configs (unless forced); a job
    without partial state has nothing to protect and computes the new config's results."""
    out = tmp_path / "out"
    finished_run(out, layout)
    if layout.resumable:
        with pytest.raises(OutputStateError, match=f"cannot resume into {out}: the config differs"):
            open_(out, "resume", layout, cfg="d" * 64)
        assert open_(out, "resume", layout, cfg="d" * 64, force=True).forced
    else:
        state = open_(out, "resume", layout, cfg="d" * 64)
        assert not state.finished
        assert json.loads((out / "_froq" / "run.json").read_text())["config_digest"] == "d" * 64


@pytest.mark.parametrize("mode", ["resume", "overwrite", "error_if_exists"])
def test_an_output_holding_an_input_is_refused_in_every_mode(layout, mode, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    inputs = [str(out / "part-00000.parquet")]
    (out / "part-00000.parquet").write_bytes(b"PAR1 input")
    with pytest.raises(OutputStateError, match=f"output {out} holds the input {inputs[0]}"):
        open_(out, mode, layout, inputs=inputs)
    # an input folder under a name the job owns counts too; one merely beside the output does not
    owned = (*layout.files, "_froq")[0]
    with pytest.raises(OutputStateError, match="holds the input"):
        open_(tmp_path / "other", mode, layout, inputs=[str(tmp_path / "other" / owned / "x")])
    open_(tmp_path / "third", mode, layout, inputs=[str(tmp_path / "third-inputs" / "a.parquet")])
    assert (out / "part-00000.parquet").read_bytes() == b"PAR1 input"


@pytest.mark.parametrize("mode", ["resume", "overwrite", "error_if_exists"])
def test_another_jobs_run_is_refused_in_every_mode(layout, mode, tmp_path):
    other = LAYOUTS["evaluate" if layout.job != "evaluate" else "filter"]
    out = tmp_path / "out"
    before = finished_run(out, other)
    with pytest.raises(OutputStateError, match=f"output {out} holds another job's run .*{other.job}"):
        open_(out, mode, layout)
    assert snapshot(out) == before


def test_the_shard_jobs_are_the_layouts_that_write_shards():
    assert {layout.job for layout in LAYOUTS.values() if layout.shards} == SHARD_JOBS


@pytest.mark.parametrize("mode", ["resume", "overwrite", "error_if_exists"])
def test_an_output_inside_a_shard_jobs_output_is_refused_in_every_mode(layout, mode, tmp_path):
    shard_run = tmp_path / "ann"
    before = finished_run(shard_run, LAYOUTS["annotate"])
    for out in (shard_run / "sub", shard_run / "a" / "b"):
        with pytest.raises(
            OutputStateError,
            match=f"output {out} lies inside {shard_run}, the output of an earlier annotate run",
        ):
            open_(out, mode, layout)
        assert not out.exists()  # refused before the folder is created
    assert snapshot(shard_run) == before
    # through a symlink too
    (tmp_path / "link").symlink_to(shard_run)
    with pytest.raises(OutputStateError, match="lies inside"):
        open_(tmp_path / "link" / "sub", mode, layout)
    # inside another job's output (distill keeps its self-training copies in its own): allowed
    other = tmp_path / "ev"
    finished_run(other, LAYOUTS["distill"])
    open_(other / "sub", mode, layout)
    assert (other / "sub" / "_froq" / "run.json").is_file()


def test_a_location_opens_its_filesystem_once_and_joins_with_its_options(tmp_path):
    options = {"anon": True}
    where = Location(f"s3://bucket/runs/{tmp_path.name}", options)
    below = where.join("_froq", "manifest.json")
    assert below == Location(f"s3://bucket/runs/{tmp_path.name}/_froq/manifest.json", options)
    assert below.path == f"bucket/runs/{tmp_path.name}/_froq/manifest.json"
    assert below.uri_of(below.path) == below.uri and below.fs is below.fs  # opened once
    local = Location(str(tmp_path / "out"))
    assert (local.path, local.uri_of(local.path), local.storage_options) == (str(tmp_path / "out"),) * 2 + (
        {},
    )
    section = SimpleNamespace(uri="s3://b/o", storage_options={"key": "k"})
    assert Location.of(section) == Location("s3://b/o", {"key": "k"})


def test_an_unknown_mode_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        open_(tmp_path / "out", "append", LAYOUTS["annotate"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["resume", "overwrite", "error_if_exists"])
def test_a_file_no_run_listed_is_refused_by_a_listed_layout_only(layout, mode, tmp_path):
    """A listed job's names come from its input, so it could write over a user's file: it refuses any file
    outside ``_froq/`` no run of it listed, in every mode; the other shard jobs refuse it as a folder a Parquet
    reader would take for parts; the other jobs leave such files alone."""
    out = tmp_path / "out"
    (out / "Some_One").mkdir(parents=True)
    (out / "Some_One" / "mine.jpg").write_bytes(b"mine")
    if layout.listed:
        with pytest.raises(OutputStateError) as refused:
            open_(out, mode, layout)
        assert str(refused.value) == (
            f"output {out} holds 1 file(s) that {layout.job} did not write (e.g. Some_One/mine.jpg): "
            f"{layout.job} writes only into an empty folder or its own earlier output, so choose another output.uri"
        )
        assert not (out / "_froq").exists()
    elif layout.shards:  # a Parquet reader of the output would read the folder with the parts: refused too
        with pytest.raises(OutputStateError, match=f"output {out} holds Some_One beside the parts"):
            open_(out, mode, layout)
    else:
        open_(out, mode, layout)
    assert (out / "Some_One" / "mine.jpg").read_bytes() == b"mine"


def test_a_listed_shard_of_another_plan_is_undone_markers_first(tmp_path):
    """``discard_listed_shards``: shards not kept lose their marker, the files their list and marker name
    (a link itself, never its target, nor a file a kept shard holds) and their list; kept shards and foreign
    ``_froq/`` files stay."""
    layout = LAYOUTS["export"]
    out = tmp_path / "out"
    state = open_(out, "resume", layout)
    target = tmp_path / "source.jpg"
    target.write_bytes(b"source")
    plans = {0: ["A/0.jpg", "A/1.jpg"], 1: ["B/2.jpg"], 2: ["B/3.jpg"]}
    for index, files in plans.items():
        record_files(state, index, files)
        for name in files:
            (out / name).parent.mkdir(exist_ok=True)
            (out / name).symlink_to(target)
        (out / "_froq" / f"part-{index:05d}.done.json").write_text(json.dumps({"files": files}))
    # an interrupted shard of another plan: its list names a file not written yet and one kept shard 0 holds
    (out / "_froq" / "files-00003.json").write_text(json.dumps(["C/4.jpg", "A/1.jpg"]))
    (out / "_froq" / "notes.txt").write_text("mine")
    state.markers = {0: {}, 1: {}, 2: {}}
    assert discard_listed_shards(state, keep={0, 2}) == 2
    assert sorted(state.markers) == [0, 2]
    assert sorted(snapshot(out)) == [
        "A/0.jpg",
        "A/1.jpg",
        "B/3.jpg",
        "_froq/files-00000.json",
        "_froq/files-00002.json",
        "_froq/notes.txt",
        "_froq/part-00000.done.json",
        "_froq/part-00002.done.json",
        "_froq/run.json",
    ]
    assert target.read_bytes() == b"source"
    assert open_(out, "resume", layout).completed == frozenset({0, 2})


MODES = ["resume", "overwrite", "error_if_exists"]


def user_files(out: Path, layout: OutputLayout) -> list[str]:
    """Write a user's own files under names ``layout`` would write or delete (its files; for a shard layout 7
    parts) into ``out``; returns their names in the order a refusal names them."""
    out.mkdir(parents=True)
    names = []
    for name in current_files(layout):
        if name.startswith("_froq/"):
            continue
        if "." in name:
            (out / name).write_bytes(b"mine")
        else:
            (out / name).mkdir()
            (out / name / "mine.bin").write_bytes(b"mine")
        names.append(name)
    if layout.shards:
        for i in range(7):
            (out / f"part-{i:05d}.parquet").write_bytes(b"PAR1 mine")
            names.append(f"part-{i:05d}.parquet")
    return names


@pytest.mark.parametrize("mode", MODES)
def test_files_the_job_would_write_without_its_run_record_are_refused_in_every_mode(layout, mode, tmp_path):
    """A folder holding the job's file names but no ``_froq/run.json`` of a run of the job: froq did not write
    them (a user's keep_list.parquet, index.html, edc.csv, part-00005.parquet), so no mode replaces or deletes
    them; the refusal names up to 5 of them."""
    out = tmp_path / "out"
    names = user_files(out, layout)
    before = snapshot(out)
    with pytest.raises(OutputStateError) as refused:
        open_(out, mode, layout)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    assert str(refused.value) == (
        f"output {out} holds {shown}, which {layout.job} would write or delete, but no _froq/run.json of "
        f"{layout.job} (froq did not write them): no output.mode replaces them; choose another output.uri "
        "or remove them"
    )
    assert snapshot(out) == before and not (out / "_froq").exists()


def test_a_run_record_of_the_job_or_of_an_older_version_makes_its_files_its_own(layout, tmp_path):
    """With the job's run record (or one without ``job``, as older versions wrote it), the same files are the
    job's earlier output: ``overwrite`` deletes them."""
    for record in ({"job": layout.job}, {}):
        out = tmp_path / f"out-{len(record)}"
        names = user_files(out, layout)
        (out / "_froq").mkdir()
        (out / "_froq" / "run.json").write_text(json.dumps({**record, "config_digest": CFG}))
        if layout.listed:  # a listed job owns its files named by a list
            (out / "_froq" / "files-00000.json").write_text(
                json.dumps([n for n in names if n.startswith("part-")])
            )
        open_(out, "overwrite", layout)
        assert sorted(snapshot(out)) == ["_froq/run.json"]
        assert json.loads((out / "_froq" / "run.json").read_text())["job"] == layout.job


@pytest.mark.parametrize("mode", MODES)
def test_a_shard_layout_refuses_top_level_files_a_parquet_reader_would_add(layout, mode, tmp_path):
    """``pd.read_parquet(out)`` of a shard job's output reads every top-level entry not starting with ``_`` or
    ``.``: a shard layout refuses any other than its parts and files, in every mode (even beside a finished
    run of its own); a listed layout refuses them as unlisted; the others leave them alone."""
    out = tmp_path / "out"
    finished_run(out, layout)
    (out / "mydata.parquet").write_bytes(b"PAR1 mine")
    (out / "_mine.parquet").write_bytes(b"PAR1 ignored")
    (out / ".hidden.parquet").write_bytes(b"PAR1 ignored")
    before = snapshot(out)
    if layout.shards and not layout.listed:
        with pytest.raises(OutputStateError) as refused:
            open_(out, mode, layout)
        assert str(refused.value) == (
            f"output {out} holds mydata.parquet beside the parts {layout.job} writes, which "
            f"pandas.read_parquet({out}) would read with them: choose another output.uri or remove them"
        )
        assert snapshot(out) == before
        (out / "mydata.parquet").unlink()
        if mode != "error_if_exists":
            open_(out, mode, layout)  # hidden and underscore names are fine
    elif layout.listed:
        with pytest.raises(OutputStateError, match=r"did not write \(e.g. \.hidden\.parquet\)"):
            open_(out, mode, layout)
    elif mode != "error_if_exists":
        open_(out, mode, layout)
    assert (out / "_mine.parquet").read_bytes() == (out / ".hidden.parquet").read_bytes() == b"PAR1 ignored"


def test_the_jobs_reading_annotation_or_filter_outputs_are_the_dataset_input_layouts():
    assert {j for j, layout in LAYOUTS.items() if layout.dataset_inputs} == {
        "distill",
        "evaluate",
        "export",
        "filter",
        "review",
    }


@pytest.mark.parametrize("mode", MODES)
def test_an_output_inside_an_input_folder_is_refused_where_the_input_is_read_as_a_folder(
    layout, mode, tmp_path
):
    """``froq filter --annotations A --output A/filt`` would break ``pd.read_parquet(A)``: refused for the jobs
    reading annotation / filter outputs (a part's folder, a keep-list's folder, a folder given itself); an
    output beside a single file input is fine. annotate/calibrate list only ``input.extensions`` in their image
    folder: an output inside it is allowed unless those name an ending froq writes."""
    annotations, keep, loose = tmp_path / "A", tmp_path / "F", tmp_path / "D"
    for folder in (annotations, keep, loose):
        folder.mkdir()
    cases = [
        (annotations / "part-00000.parquet", annotations / "filt" / "deeper", annotations),
        (keep / "keep_list.parquet", keep / "exp", keep),
        (annotations, annotations / "out2", annotations),
    ]
    for item, out, folder in cases:
        if layout.dataset_inputs:
            with pytest.raises(OutputStateError) as refused:
                open_(out, mode, layout, inputs=[str(item)])
            assert str(refused.value) == (
                f"output {out} lies inside the input folder {folder} ({layout.job} reads it, and reading that "
                "folder would read the output's files with it): choose an output.uri outside it"
            )
            assert not out.exists()
        else:
            open_(out, mode, layout, inputs=[str(item)])
            if layout.shards:  # an image job listing .parquet files would pick the output up
                with pytest.raises(OutputStateError, match=f"output {out}2 lies inside the input folder"):
                    open_(
                        Path(f"{out}2"),
                        mode,
                        layout,
                        inputs=[str(item)],
                        listed_extensions=[".jpg", ".parquet"],
                    )
    open_(loose / "out", mode, layout, inputs=[str(loose / "annotations.parquet")])


@pytest.mark.parametrize("job", ["annotate", "calibrate", "self_training"])
def test_a_part_whose_size_differs_from_its_marker_is_redone_on_resume(job, tmp_path):
    """The marker records the part's size: a part truncated after its marker was written is stale, so the
    resume decision makes its shard pending again; a marker of an older version (no ``bytes``) is trusted."""
    import pyarrow as pa

    from froq_ray.storage.run_state import discard_stale_shards
    from froq_ray.storage.shards import Shard, write_shard

    layout = LAYOUTS[job]
    out = tmp_path / "out"
    state = open_(out, "resume", layout)
    table = pa.table({"status": ["ok", "ok"], "quality": [1.0, 2.0]})
    markers = [
        write_shard(state.fs, state.path, Shard(i, 2 * i, 2 * i + 2), table, shard_input_digest="d")
        for i in range(3)
    ]
    sizes = [(out / f"part-{i:05d}.parquet").stat().st_size for i in range(3)]
    assert [m["bytes"] for m in markers] == sizes
    # shard 1 truncated; shard 2 truncated too, but its marker is an older version's (no size recorded)
    for i in (1, 2):
        part = out / f"part-{i:05d}.parquet"
        part.write_bytes(part.read_bytes()[: sizes[i] // 2])
    old = json.loads((out / "_froq" / "part-00002.done.json").read_text())
    del old["bytes"]
    (out / "_froq" / "part-00002.done.json").write_text(json.dumps(old))
    state = open_(out, "resume", layout)
    assert state.completed == frozenset({0, 1, 2})
    bounds = {i: (2 * i, 2 * i + 2) for i in range(3)}
    assert discard_stale_shards(state, bounds) == 2  # the marker and the part of shard 1
    assert state.completed == frozenset({0, 2})
    assert not (out / "part-00001.parquet").exists() and not (out / "_froq" / "part-00001.done.json").exists()
    assert open_(out, "resume", layout).completed == frozenset({0, 2})


@pytest.mark.parametrize("job", sorted(j for j, layout in LAYOUTS.items() if layout.dataset_inputs))
def test_a_symlink_does_not_get_an_output_into_an_input_folder(job, tmp_path):
    """Local paths are compared with their links resolved: an output reached through a link to the input folder,
    or an input named through a link, is still refused, and nothing is created."""
    layout = LAYOUTS[job]
    annotations = tmp_path / "A"
    annotations.mkdir()
    (tmp_path / "link").symlink_to(annotations)
    for out, item in ((tmp_path / "link" / "filt", annotations), (annotations / "ev", tmp_path / "link")):
        with pytest.raises(OutputStateError, match=r"lies inside the input folder"):
            open_(out, "resume", layout, inputs=[str(item)])
        assert not out.exists()


def test_a_dry_run_creates_no_folder_and_refuses_an_output_that_cannot_be_created(layout, tmp_path):
    out = tmp_path / "a" / "b" / "out"
    state = open_(out, "resume", layout, dry_run=True)
    assert not state.resumed and not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputStateError, match=f"output {tmp_path / 'file' / 'out'} is not writable"):
        open_(tmp_path / "file" / "out", "resume", layout, dry_run=True)
    open_(out, "resume", layout)  # the real run creates it
    assert (out / "_froq" / "run.json").is_file()
