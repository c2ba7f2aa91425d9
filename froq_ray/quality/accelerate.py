"""Frozen TorchScript graphs: the same computation, 1.7-3x faster on a CPU.

A network is traced, frozen and optimised for inference (batch-norm folded into the convolutions, oneDNN
layouts on the CPU). Two uses share one check-and-fallback (:func:`frozen_module`):

- :func:`frozen_copy`: a hook-free copy of a network, for the perturbation pseudo-labels (~76 forward passes
  per image, of which only the embeddings are used);
- :func:`frozen_observed_network`: FROQ's observed forward pass as one graph that returns the selected layers'
  per-image norms, stacked (L, N), and the embedding (:class:`ObservedNetwork`; ``FroqScorer(graph=...)``).

A frozen graph is kept only if it reproduces the eager module on a check batch of ANOTHER size than the one
it was traced with (a trace can bake the batch size into a shape; the last batch of a shard is smaller).
When tracing or freezing fails, or the outputs differ, one log line says why and the caller runs eagerly.

What a trace cannot keep: Python control flow on tensor VALUES (``if x.max() > t``, a Python-level check that
raises on some inputs) is recorded as the branch the trace batch took. The check batch catches it only when
it takes another branch; the registry's backbones have no such flow (batch-size and shape branches, e.g.
:class:`~froq_ray.models.onnx_model.PerImageNetwork`'s loop over the batch, are caught by the check's other
batch size). A network with value-dependent flow must be scored with ``graph: eager``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..models.inference import autocast_context, autocast_dtype
from ..models.inference import to_memory_format as to_memory_format
from ..vocabulary import GRAPHS, MEMORY_FORMATS
from .observer import NormObserver, as_embedding

log = logging.getLogger(__name__)

TOLERANCE = 1e-3
"""Largest relative difference a frozen graph may show on the check batch, per output row (each layer's norms,
each image's embedding) relative to that row's largest value: folding batch-norm reorders float sums (measured
on MobileFaceNet: 2.7e-6 for the embedding, 2.7e-7 for the quality)."""


def other_size_batch(sample: torch.Tensor) -> torch.Tensor:
    """``sample`` (N, C, H, W) plus its first image mirrored: a check batch of N + 1 images, never the size
    a graph traced on ``sample`` has seen."""
    return torch.cat([sample, sample[:1].flip(-1)]).contiguous(memory_format=_memory_format(sample))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _tensors(output: Any) -> list[torch.Tensor]:
    items = output if isinstance(output, (tuple, list)) else [output]
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise TypeError(
            f"a frozen graph must return a tensor or a tuple of tensors, got {type(output).__name__}"
        )
    return list(items)


def relative_difference(candidate: Any, reference: Any) -> float:
    """The largest ``|candidate - reference|`` of each row of each output tensor divided by that row's largest
    ``|reference|`` (a row: dim 0; a 1-d tensor is one row). ``inf`` when the outputs differ in structure or
    shape."""
    got, expected = _tensors(candidate), _tensors(reference)
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected, strict=True)):
        return float("inf")
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        g, e = g.float(), e.float()
        if e.dim() < 2:
            g, e = g.reshape(1, -1), e.reshape(1, -1)
        g, e = g.reshape(e.shape[0], -1), e.reshape(e.shape[0], -1)
        if e.numel() == 0:
            continue
        scale = e.abs().amax(dim=1).clamp_min(1e-6)
        worst = max(worst, float(((g - e).abs().amax(dim=1) / scale).max()))
    return worst


def frozen_module(
    module: nn.Module, sample: torch.Tensor, check: torch.Tensor | None = None, what: str | None = None
) -> torch.jit.ScriptModule | None:
    """``module`` traced on ``sample``, frozen and optimised for inference, if its output on ``check`` matches
    the eager ``module``'s within :data:`TOLERANCE` (:func:`relative_difference`); else ``None``, after one log
    line naming ``what`` (default: the module's class) and the reason.

    ``sample``, ``check``: float NCHW network input on the module's device, of different batch sizes
    (``check`` defaults to :func:`other_size_batch` of ``sample``). ``module`` must be in eval mode and return
    a tensor or a tuple of tensors. Any exception while tracing, freezing or running the graph is a fallback,
    never an error."""
    what = what or type(module).__name__
    check = other_size_batch(sample) if check is None else check
    try:
        if check.shape[0] == sample.shape[0]:
            raise ValueError(f"the check batch must differ in size from the trace batch ({sample.shape[0]})")
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # what the check batch is for
            # recent torch releases mark TorchScript deprecated; it is still the fastest CPU path measured here
            warnings.simplefilter("ignore", DeprecationWarning)
            reference = module(check)
            traced = torch.jit.trace(module, sample, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            frozen(sample)  # the first calls specialise the graph
            frozen(sample)
            error = relative_difference(frozen(check), reference)
    except Exception as exc:  # noqa: BLE001 - freezing is an optimisation: any failure falls back
        log.warning("frozen graph of %s not used (%s: %s); running eagerly", what, type(exc).__name__, exc)
        return None
    if error > TOLERANCE:
        log.warning(
            "frozen graph of %s not used (relative difference %.2e on a check batch of %d); running eagerly",
            what,
            error,
            check.shape[0],
        )
        return None
    return frozen


def frozen_copy(network: nn.Module, sample: torch.Tensor) -> nn.Module:
    """A frozen, optimised TorchScript copy of ``network`` (checked by :func:`frozen_module` on a batch of
    another size than ``sample``, float NCHW network input); ``network`` itself when that is not possible.
    The device is ``sample``'s."""
    network = network.eval().to(sample.device)
    return frozen_module(network, sample) or network


class ObservedNetwork(nn.Module):
    """FROQ's observed forward pass as a module: input (N, C, H, W) float -> ``norms``, or ``(norms,
    embedding)`` when ``with_embedding``.

    ``norms``: (L, N) float32, the per-image L2 norms of ``layers`` in that order, recorded by a
    :class:`~froq_ray.quality.observer.NormObserver` (so the same counted-call rule: a module called several
    times counts its last call); ``embedding``: (N, D) float32 (:func:`~froq_ray.quality.observer.as_embedding`).
    Run it inside ``with observed.observer:`` (the hooks live only there). Raises ``RuntimeError`` when a
    layer produced no tensor in the pass."""

    def __init__(self, network: nn.Module, layers: Sequence[str], with_embedding: bool = True) -> None:
        super().__init__()
        self.network = network
        self.layers = list(layers)
        self.with_embedding = with_embedding
        self.observer = NormObserver(network, self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        output = self.observer.forward(x)
        norms = self.observer.stacked_norms()
        return (norms, as_embedding(output)) if self.with_embedding else norms


def frozen_observed_network(
    network: nn.Module, layers: Sequence[str], sample: torch.Tensor, with_embedding: bool = True
) -> torch.jit.ScriptModule | None:
    """:class:`ObservedNetwork` of ``network`` as one frozen graph (same inputs and outputs; no hooks), or
    ``None`` after a logged fallback (:func:`frozen_module`: traced on ``sample``, checked against the hooked
    eager pass on a batch of another size). Without the embedding, freezing drops every operation after the
    deepest selected layer's counted call. ``network`` must be in eval mode on ``sample``'s device."""
    observed = ObservedNetwork(network, layers, with_embedding).eval()
    with observed.observer:
        return frozen_module(observed, sample, what=f"the observed {type(network).__name__}")


# ------------------------------------------------------------------------- network optimisation (scorer + students)
# Memory format, torch.compile and the check batch they are verified on: used by the FROQ scorer, the
# pseudo-label / calibrate modes (engine/modes.py) and the student runner (distill/serving.py).

CHECK_TOLERANCE = {
    "fp32": 1e-3,
    "bf16": 3e-2,
    "fp16": 1e-2,
}  # relative, on a check batch, per PRECISIONS name


def resolve_memory_format(requested: str) -> str:
    """``auto`` -> ``channels_last`` (faster on CUDA and on oneDNN CPUs alike for the zoo's CNNs; a network
    for which it is not equivalent falls back in :func:`apply_memory_format`); other names are checked and
    kept. Raises ``ValueError`` for a name not in :data:`MEMORY_FORMATS`."""
    if requested not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {list(MEMORY_FORMATS)}, got {requested!r}")
    return "channels_last" if requested == "auto" else requested


def resolve_graph(requested: str, device: torch.device | str, precision: str, compile: bool) -> str:
    """The observed graph a scorer runs: ``auto`` -> ``frozen`` on the CPU in fp32 without ``compile`` (where
    it is measured faster), ``eager`` otherwise (a GPU keeps eager or ``torch.compile``; bf16/fp16 autocast
    stays eager). Raises ``ValueError`` for a name not in :data:`GRAPHS` and for ``frozen`` with a precision
    other than fp32 or with ``compile``."""
    if requested not in GRAPHS:
        raise ValueError(f"graph must be one of {list(GRAPHS)}, got {requested!r}")
    if requested == "auto":
        cpu = torch.device(device).type == "cpu"
        return "frozen" if cpu and precision == "fp32" and not compile else "eager"
    if requested == "frozen" and (precision != "fp32" or compile):
        raise ValueError(
            f"graph 'frozen' runs fp32 without torch.compile (got precision {precision!r}, compile={compile})"
        )
    return requested


def check_batch(size: int, device: torch.device | str) -> torch.Tensor:
    """The fixed batch (2 seeded normal images, float NCHW network input of side ``size``) on which an
    optimised network (layout, compile, TorchScript copy) is compared with the plain one."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)


def max_relative_difference(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    scale = float(reference.float().abs().max().clamp_min(1e-6))
    return float((candidate.float() - reference.float()).abs().max()) / scale


def apply_memory_format(network: nn.Module, memory_format: str, sample: torch.Tensor) -> str:
    """Put ``network`` (in place) in ``memory_format`` if it runs and matches NCHW on ``sample`` (float NCHW
    network input on the network's device); returns the format in use (``contiguous`` after a fallback)."""
    if memory_format == "contiguous":
        return memory_format
    with torch.inference_mode():
        reference = as_embedding(network(sample))
        try:
            # Module.to takes memory_format at runtime; torch's type overloads omit it
            network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            candidate = as_embedding(network(sample.contiguous(memory_format=torch.channels_last)))
            error = max_relative_difference(candidate, reference)
        except Exception as exc:  # noqa: BLE001 - a layout is an optimisation: any failure falls back
            error, reason = float("inf"), f"{type(exc).__name__}: {exc}"
        else:
            reason = f"relative difference {error:.2e} on the check batch"
    if error <= CHECK_TOLERANCE["fp32"]:
        return memory_format
    # Module.to takes memory_format at runtime; torch's type overloads omit it
    network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    log.warning("channels_last not used for %s (%s); running NCHW", type(network).__name__, reason)
    return "contiguous"


def compile_network(network: nn.Module, backend: str = "inductor") -> Callable[..., Any]:
    """``torch.compile`` with fixed shapes first (a batch of another size compiles once more)."""
    return torch.compile(network, backend=backend, dynamic=False)


def compiled_or_eager(
    network: nn.Module, sample: torch.Tensor, precision: str = "fp32", backend: str = "inductor"
) -> Callable[..., Any]:
    """A compiled ``network`` for hook-free passes (e.g. perturbed copies), or ``network`` itself when
    compiling fails or its output on ``sample`` differs from the eager output (logged)."""
    device, dtype = sample.device, autocast_dtype(precision)
    try:
        with torch.inference_mode(), autocast_context(device, dtype):
            expected = as_embedding(network(sample))
            compiled = compile_network(network, backend)
            error, reason = max_relative_difference(as_embedding(compiled(sample)), expected), None
    except Exception as exc:  # noqa: BLE001 - compilation is an optimisation: any failure falls back
        error, reason = float("inf"), f"{type(exc).__name__}: {exc}"
    if error > CHECK_TOLERANCE[precision]:
        log.warning(
            "torch.compile not used for %s (%s); running eagerly",
            type(network).__name__,
            reason or f"relative difference {error:.2e} from eager on the check batch",
        )
        return network
    return compiled
