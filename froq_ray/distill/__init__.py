"""Distillation: train a small student to predict a teacher's face-image quality from the crop alone.

Plain torch (no Ray) except :mod:`froq_ray.engine.train`, which is not imported here:

* :mod:`.students` - student architectures (``build_student``), input contract, teacher-unit output;
* :mod:`.losses` - target standardisation, regression + ranking losses;
* :mod:`.split` - identity/image-disjoint train/validation split by a seeded hash;
* :mod:`.export` - ONNX export and its onnxruntime check;
* :mod:`.artifact` - save/load the student artifact (safetensors + ONNX + card.json);
* :mod:`.cost` - parameters, FLOPs, CPU throughput.
"""

from .artifact import (
    CARD_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    LoadedStudent,
    StudentArtifactError,
    load_student_artifact,
    save_student_artifact,
)
from .cost import count_flops, count_params, cpu_images_per_second
from .export import check_onnx, export_onnx
from .losses import LossConfig, TargetScaler, distill_loss
from .split import check_no_leak, split_key_column, validation_mask
from .students import STUDENT_ARCHS, StudentNetwork, build_student, student_contract

__all__ = [
    "CARD_FILE",
    "ONNX_FILE",
    "STUDENT_ARCHS",
    "WEIGHTS_FILE",
    "LoadedStudent",
    "LossConfig",
    "StudentArtifactError",
    "StudentNetwork",
    "TargetScaler",
    "build_student",
    "check_no_leak",
    "check_onnx",
    "count_flops",
    "count_params",
    "cpu_images_per_second",
    "distill_loss",
    "export_onnx",
    "load_student_artifact",
    "save_student_artifact",
    "split_key_column",
    "student_contract",
    "validation_mask",
]
