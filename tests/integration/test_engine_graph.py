"""The scoring run's Ray Data graph, built (not run) on a real local Ray: a GPU actor pool takes whole shards
(Ray's public map_batches refuses batch_size=None with GPUs), decode stays out of the scoring actors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from froq_ray.engine.dataset import scoring_dataset
from froq_ray.engine.stages import DecodeStageConfig, ReadStageConfig, ScoringStageConfig
from froq_ray.engine.write import WriteStageConfig

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("num_gpus", [0.0, 1.0])
@pytest.mark.usefixtures("ray_cluster")
def test_the_graph_maps_whole_shards_with_and_without_gpus(tmp_path, num_gpus):
    scoring = ScoringStageConfig(
        mode="froq",
        model_name="m",
        model_weights=None,
        model_options={},
        num_gpus=num_gpus,
        num_cpus=1,
        actors=(1, 4),
    )
    read = ReadStageConfig(str(tmp_path), {}, DecodeStageConfig(num_cpus=1))
    write = WriteStageConfig.create(
        str(tmp_path), {}, pa.schema([pa.field("path", pa.string())]), {}, inputs_digest="d"
    )
    items = [{"shard": 0, "part": "p.parquet", "start": 0, "stop": 2, "row0": 0}]
    ds = scoring_dataset(items, read, scoring, write, max_tasks_in_flight_per_actor=2)  # lazy: nothing runs
    plan = str(ds)  # the logical plan, outermost operator first
    assert plan.index("write_shards") < plan.index("ScoringStage") < plan.index("read_shard")
