"""Numerical guard: bf16 autocast keeps the ranking of fp32 FROQ scores (Spearman >= 0.999) on real crops.

MobileFaceNet on 200 LFW-dev crops spread over the identities, CPU autocast. The calibration is a shipped
LFW-dev one from docs/results when there is one, else a cheap one fitted here on 32 other crops. The
benchmark (froq_ray.bench) reports the same Spearman for GPU runs.

Cost: on a CPU without AVX512-BF16/AMX (this project's 2-core AMD EPYC) oneDNN has no bf16 convolution, so
autocast sends every convolution to ``aten::_slow_conv2d_forward`` (depthwise ones group by group): ~9
images/s against ~100 in fp32 on an idle box, i.e. ~25 s for this test. Fewer crops are not a cheaper
equivalent: on 48 crops the Spearman of the same scores already varies between 0.9988 and 0.9996.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from froq_ray.imaging.folder import list_identity_folder, load_crops_strict
from froq_ray.models import load_model
from froq_ray.quality.artifact import CalibrationArtifact
from froq_ray.quality.calibration import calibrate, spearman
from froq_ray.quality.perturbations import PerturbationSettings
from froq_ray.quality.scorer import FroqScorer

RESULTS = Path(__file__).resolve().parents[3] / "docs" / "results"
SHIPPED = (
    RESULTS / "mobilefacenet-lfw-folds123.calibration.json",
    RESULTS / "mobilefacenet-lfw-folds123-sample300.calibration.json",
)
SCORED, CALIBRATION = 200, 32


@pytest.fixture(scope="module")
def model(mobilefacenet_pt):
    return load_model("mobilefacenet", str(mobilefacenet_pt))


@pytest.fixture(scope="module")
def lfw_paths(lfw_dev_dir):
    paths = list_identity_folder(lfw_dev_dir / "images").absolute_paths()
    spread = paths[:: len(paths) // SCORED][:SCORED]  # one image every ~19: many identities
    return spread, paths[1 :: len(paths) // CALIBRATION][:CALIBRATION]


@pytest.fixture(scope="module")
def artifact(model, lfw_paths):
    for path in SHIPPED:
        if path.is_file():
            return CalibrationArtifact.from_json(path.read_text(), source=str(path))
    cheap = PerturbationSettings(noise_masks=1, occlusion_cell=56)  # flip, 1 noise mask, 2x2 cells
    return calibrate(model, [load_crops_strict(lfw_paths[1], 112)], cheap, top_n=5)


def test_bf16_scores_keep_the_fp32_ranking(model, artifact, lfw_paths):
    crops = load_crops_strict(lfw_paths[0], 112)
    fp32 = FroqScorer(model, artifact, precision="fp32", quality_only=True).score(crops)
    bf16 = FroqScorer(model, artifact, precision="bf16", quality_only=True).score(crops)
    assert bf16.precision == "bf16" and bf16.quality.dtype == np.float32 and bf16.quality.shape == (SCORED,)
    assert not np.array_equal(bf16.quality, fp32.quality)  # autocast really ran in bf16
    assert (
        np.unique(fp32.quality).size > 0.95 * SCORED
    )  # a real spread of scores (LFW-dev has a few duplicates)
    rho = spearman(bf16.quality, fp32.quality)
    assert rho == pytest.approx(spearmanr(bf16.quality, fp32.quality)[0], abs=1e-12)
    assert rho >= 0.999, f"bf16 vs fp32 Spearman {rho:.5f} on {SCORED} LFW-dev crops"
