"""FROQ core: perturbation pseudo-labels, norm observer, calibration (greedy / linear observer), artifact, quality
percentiles, scorer (plain torch/numpy)."""

from .artifact import (
    ArtifactError,
    ArtifactMismatchError,
    CalibrationArtifact,
    CalibrationSet,
    CalibrationSetDigest,
    check_matches,
    load_artifact,
)
from .calibration import (
    GreedyResult,
    build_artifact,
    calibrate,
    concat_observations,
    greedy_selection,
    layer_utilities,
    observe_calibration_batch,
    observe_norms_and_embeddings,
    spearman,
)
from .linear import LinearObserver, fit_linear, grouped_folds, ridge_weights
from .observer import NormObserver, StopPoint, candidate_layers, probe_stop_point
from .percentile import quality_percentile, quality_quantiles
from .perturbations import PerturbationSettings, PseudoLabeler
from .scorer import FroqScorer, ScoreResult

__all__ = [
    "ArtifactError",
    "ArtifactMismatchError",
    "CalibrationArtifact",
    "CalibrationSet",
    "CalibrationSetDigest",
    "FroqScorer",
    "GreedyResult",
    "LinearObserver",
    "NormObserver",
    "PerturbationSettings",
    "PseudoLabeler",
    "ScoreResult",
    "StopPoint",
    "build_artifact",
    "calibrate",
    "candidate_layers",
    "check_matches",
    "concat_observations",
    "fit_linear",
    "greedy_selection",
    "grouped_folds",
    "layer_utilities",
    "load_artifact",
    "observe_calibration_batch",
    "observe_norms_and_embeddings",
    "probe_stop_point",
    "quality_percentile",
    "quality_quantiles",
    "ridge_weights",
    "spearman",
]
