"""Evaluation: comparison pairs, verification accuracy, EDC / pAUC of quality scores, EDC plots.

Plain numpy (and matplotlib for the plot); nothing here imports ray or torch.
"""

from .edc import EdcOptions, EdcResult, PaucValue, edc, fmr_threshold, pair_quality
from .pairs import PairBlock, PairPlan, all_pairs_similarity, plan_pairs, read_lfw_pairs
from .protocol import compute_edc_curves, edc_markdown_table, evaluate_quality_scores, results_table
from .verification import VerificationResult, fixed_threshold_accuracy, kfold_accuracy

__all__ = [
    "EdcOptions",
    "EdcResult",
    "PairBlock",
    "PairPlan",
    "PaucValue",
    "VerificationResult",
    "all_pairs_similarity",
    "compute_edc_curves",
    "edc",
    "edc_markdown_table",
    "evaluate_quality_scores",
    "fixed_threshold_accuracy",
    "fmr_threshold",
    "kfold_accuracy",
    "pair_quality",
    "plan_pairs",
    "read_lfw_pairs",
    "results_table",
]
