"""FROQ core: perturbation pseudo-labels, norm observer, calibration, artifact, scorer (plain torch/numpy)."""

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
    spearman,
)
from .observer import NormObserver, StopPoint, candidate_layers, probe_stop_point
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
    "greedy_selection",
    "layer_utilities",
    "load_artifact",
    "observe_calibration_batch",
    "probe_stop_point",
    "spearman",
]
