"""ONNX export of a student and its numerical check against PyTorch with onnxruntime.

The graph takes ``pixels`` (N, 3, S, S) float32, normalised as the student's input contract says, and
returns ``quality`` (N,) in teacher units (the de-standardisation buffers are part of the graph). The batch
axis is dynamic. Export uses the TorchScript-based exporter (``dynamo=False``), which needs no extra
packages and gives the same graph on torch 2.11 and 2.13.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import torch

from .students import StudentNetwork

ONNX_OPSET = 17
INPUT_NAME = "pixels"
OUTPUT_NAME = "quality"


def _cpu_eval_copy(network: StudentNetwork) -> StudentNetwork:
    """An eval-mode CPU copy, so exporting never changes the caller's network (device, mode)."""
    return copy.deepcopy(network).cpu().eval()


def export_onnx(network: StudentNetwork, path: str) -> None:
    """Write ``network`` (eval mode, on the CPU) as an ONNX graph with a dynamic batch axis to ``path``."""
    exported = _cpu_eval_copy(network)
    size = exported.input_size
    example = torch.zeros(2, 3, size, size, dtype=torch.float32)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of the dynamo one; it is chosen on purpose here
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            torch.onnx.export(
                exported,
                (example,),
                path,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )


def check_onnx(path: str, network: StudentNetwork, samples: torch.Tensor) -> float:
    """Max absolute difference between onnxruntime (CPU) and ``network`` in eval mode on ``samples``."""
    import onnxruntime

    reference_net = _cpu_eval_copy(network)
    x = samples.detach().to("cpu", torch.float32).contiguous()
    with torch.no_grad():
        expected = reference_net(x).numpy()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a check on a few samples; spare threads only spin on a busy machine
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    if actual.shape != expected.shape:
        raise ValueError(f"ONNX graph {path} returned shape {actual.shape}, PyTorch {expected.shape}")
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
