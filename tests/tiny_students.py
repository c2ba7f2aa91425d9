"""Tiny distillation students for fast tests: the smallest options of each architecture, built under a seed."""

from __future__ import annotations

import torch

from froq_ray.distill.students import StudentNetwork, build_student

TINY_STUDENT_OPTIONS = {"tiny_cnn": {"width": 4}, "mobilefacenet_student": {"head_hidden": 8}}


def seeded_student(arch: str, size: int, seed: int = 0, head: str | None = None) -> StudentNetwork:
    """``build_student(arch, size, TINY_STUDENT_OPTIONS[arch])`` after ``torch.manual_seed(seed)``: the same seed
    gives the same weights. ``head`` (mobilefacenet_student only, e.g. ``"energy"``) is added to the options."""
    torch.manual_seed(seed)
    return build_student(arch, size, {**TINY_STUDENT_OPTIONS[arch], **({"head": head} if head else {})})
