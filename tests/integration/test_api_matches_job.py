"""The Python API gives what the annotate job writes: ``froq annotate`` (built-in dlib model and calibration, real
local Ray cluster) on real LFW-dev crops with a corrupt, an empty and a non-image file mixed in, against
``froq_ray.Scorer.score`` on the same paths and ``froq_ray.ray_stage`` inside a user's own Ray Data pipeline
(paths from ``from_items``, and bytes from ``read_binary_files``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import froq_ray
from tests.integration.jobfiles import BAD_FILES, lfw_sample, local_inputs, read_output, run_job, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, lfw_dev_dir, ray_cluster):
    """The annotate job's output frame (sorted by path) for 6 real crops + the 3 bad files."""
    assert ray_cluster.is_initialized()  # the job joins the test cluster
    root = tmp_path_factory.mktemp("api")
    local_inputs(root / "in", lfw_sample(lfw_dev_dir, identities=3, per_identity=2))
    cfg = {
        "job": "annotate",
        "input": {"uri": str(root / "in"), "identity_from_folder": True},
        "resources": {"model_batch_size": 4, "device": "cpu"},
        "output": {"uri": str(root / "out"), "shard_size": 5, "progress_interval_s": 1},
    }
    assert run_job("annotate", write_config(root, "annotate", cfg)) == 0
    df = read_output(str(root / "out")).sort_values("path", ignore_index=True)
    assert len(df) == 9 and df.status.value_counts().to_dict() == {
        "ok": 6,
        "corrupt": 1,
        "empty": 1,
        "not_an_image": 1,
    }
    return df


@pytest.fixture(scope="module")
def scorer():
    return froq_ray.Scorer.load(device="cpu", batch_size=4)


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every column equal (text, ints and statuses exactly, with nulls as nulls), scores within float tolerance."""
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    pd.testing.assert_frame_equal(
        got.drop(columns=["quality", "embedding"]), want.drop(columns=["quality", "embedding"])
    )
    np.testing.assert_allclose(got.quality.to_numpy(), want.quality.to_numpy(), rtol=1e-5)
    assert got.embedding.isna().tolist() == want.embedding.isna().tolist()
    ok = want.embedding.notna().to_numpy()
    np.testing.assert_allclose(
        np.stack(got.embedding[ok]), np.stack(want.embedding[ok]), rtol=1e-4, atol=1e-6
    )


def as_frame(ds) -> pd.DataFrame:
    """The dataset's Arrow blocks as plain pyarrow converts them, sorted by path (Ray's ``to_pandas``, and the
    pandas metadata Ray puts on its blocks, ask for pandas' Arrow-backed dtypes)."""
    import ray

    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    return table.replace_schema_metadata().to_pandas().sort_values("path", ignore_index=True)


def test_scorer_equals_the_annotate_jobs_parquet(annotated, scorer):
    got = scorer.score(annotated.path.tolist(), identities=annotated.identity.tolist())
    assert_same_rows(got, annotated)
    bad = {
        Path(p).parent.name + "/" + Path(p).name: s
        for p, s in zip(got.path, got.status, strict=True)
        if s != "ok"
    }
    assert bad == BAD_FILES


@pytest.mark.usefixtures("ray_cluster")
def test_ray_stage_in_a_users_pipeline_gives_the_same_rows(annotated):
    import ray.data

    items = [
        {"path": p, "identity": i, "mine": k}
        for k, (p, i) in enumerate(zip(annotated.path, annotated.identity, strict=True))
    ]
    stage = froq_ray.ray_stage(device="cpu", model_batch_size=4, identity_column="identity", batch_size=4)
    assert (stage.num_gpus, stage.num_cpus, stage.concurrency) == (0.0, 1.0, 1)
    got = as_frame(ray.data.from_items(items).map_batches(**stage))
    assert got.mine.tolist() == list(range(len(items)))  # the user's own column travels with its row
    assert_same_rows(got[list(annotated.columns)], annotated)


@pytest.mark.usefixtures("ray_cluster")
def test_ray_stage_on_binary_files_names_rows_by_their_path(annotated):
    import ray.data

    stage = froq_ray.ray_stage(device="cpu", model_batch_size=4, input_column="bytes", batch_size=3)
    ds = ray.data.read_binary_files(annotated.path.tolist(), include_paths=True)
    got = as_frame(ds.map_batches(**stage))
    assert got.path.tolist() == annotated.path.tolist()
    want = annotated.assign(identity=None)
    assert_same_rows(got[list(annotated.columns)], want.astype({"identity": annotated.identity.dtype}))
