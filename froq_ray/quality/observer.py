"""Observing a forward pass: per-image L2 norms of module outputs, computed in forward hooks.

Semantics (what one "norm" of a module means):

- The norm of a module for image i is ``||flatten(output[i])||_2``, accumulated in float32 whatever the
  dtype the module ran in (fp32, bf16 or fp16 under autocast). Nothing else is kept: each hook reduces the
  output to an ``(N,)`` float32 tensor immediately.
- The norm is taken *inside the hook*, i.e. as soon as the module has produced its output and before any
  later operation runs. A later in-place operation (``ReLU(inplace=True)``, ``x += y``) therefore cannot
  change the value that was recorded, exactly as the reference's ``output.detach().clone()`` hook.
- Tuple/list outputs: the first tensor element counts. Modules whose output holds no tensor are skipped.
- Modules called more than once in one forward pass (a shared activation, a reused block): the LAST call
  counts. Every call overwrites the recorded norm, which is what the reference's hooks do (they overwrite a
  dict entry). The number of calls per module is recorded (:meth:`NormObserver.call_counts`) so this is
  visible.
- Modules that are not called in a forward pass have no norm (they are absent from :meth:`norms`).
- State is reset at the start of every forward pass of the root network (a forward pre-hook on the root).

Truncated forward (quality only): a :class:`StopPoint` names a module and the call number after which the
forward pass is abandoned; the hook raises a private exception there, :meth:`NormObserver.forward` catches
it and returns ``None`` instead of the network output. :func:`probe_stop_point` finds the stop point from
the execution order seen in one probe pass: the selected layer whose counted (last) call happens latest.
The probe assumes the module call structure does not depend on the input values (true for FR backbones).

This module also holds the small plumbing shared by the pseudo-labeler, calibration and the scorer:
uint8 crops -> network input, network output -> embedding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# uint8 crops -> network input lives in imaging/prepare.py; re-exported for the callers that import it from here
from ..imaging.prepare import as_batch_tensor as as_batch_tensor
from ..imaging.prepare import network_input as network_input

# precision plumbing lives in models/inference.py; re-exported for the callers that import it from here
from ..models.inference import autocast_context as autocast_context
from ..models.inference import autocast_dtype as autocast_dtype
from ..models.inference import precision_name as precision_name


# ----------------------------------------------------------------------------------------------- plumbing
def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module output stands for: itself, or the first tensor of a tuple/list (else None)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def as_embedding(output: Any) -> torch.Tensor:
    """Network output -> (N, D) float32 embedding (first tensor of a tuple output, flattened)."""
    tensor = first_tensor(output)
    if tensor is None:
        raise TypeError(f"network output holds no tensor: {type(output).__name__}")
    return tensor.reshape(tensor.shape[0], -1).float()


def per_image_l2(tensor: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N,) L2 norm of each flattened item, accumulated in float32."""
    return torch.linalg.vector_norm(tensor.detach().reshape(tensor.shape[0], -1), dim=1, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------- layers
def candidate_layers(network: nn.Module) -> list[str]:
    """All module names of ``network`` except the root, containers included, in ``named_modules`` order."""
    return [name for name, _ in network.named_modules() if name]


def resolve_layers(network: nn.Module, layer_names: Iterable[str]) -> dict[str, nn.Module]:
    """Name -> module, with an error naming every layer the network does not have."""
    names = list(layer_names)
    modules = dict(network.named_modules())
    missing = [n for n in names if n not in modules or n == ""]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise KeyError(f"layers not found in {type(network).__name__}: {shown}")
    return {n: modules[n] for n in names}


@dataclass(frozen=True)
class StopPoint:
    """Abandon the forward pass right after call number ``call`` (1-based) of module ``layer``."""

    layer: str
    call: int


class _StopForward(Exception):
    """Raised from a hook to end a truncated forward pass; never escapes :meth:`NormObserver.forward`."""


# ----------------------------------------------------------------------------------------------- observer
class NormObserver:
    """Context manager that records per-image output norms of ``layer_names`` during forward passes.

    >>> with NormObserver(net, ["block1", "block2.relu"]) as obs:
    ...     out = obs.forward(x)          # or net(x)
    ...     norms = obs.norms()           # {"block1": (N,), "block2.relu": (N,)}
    """

    def __init__(
        self, network: nn.Module, layer_names: Sequence[str], stop_at: StopPoint | None = None
    ) -> None:
        self.network = network
        self.layer_names = list(layer_names)
        self._modules = resolve_layers(network, self.layer_names)
        if stop_at is not None and stop_at.layer not in self._modules:
            raise KeyError(f"stop layer {stop_at.layer!r} is not among the observed layers")
        self.stop_at = stop_at
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._norms: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._order: list[tuple[str, int]] = []

    # -- hooks
    def _reset(self, *_: Any) -> None:
        self._norms = {}
        self._calls = {}
        self._order = []

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = first_tensor(output)
            if tensor is None:
                return
            count = self._calls.get(name, 0) + 1
            self._calls[name] = count
            self._order.append((name, count))
            self._norms[name] = per_image_l2(tensor)
            if self.stop_at is not None and self.stop_at.layer == name and self.stop_at.call == count:
                raise _StopForward

        return hook

    def __enter__(self) -> NormObserver:  # noqa: PYI034 (typing.Self needs Python 3.11)
        self._reset()
        self._handles.append(self.network.register_forward_pre_hook(self._reset))
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- running
    def forward(self, x: torch.Tensor) -> Any | None:
        """Run the network; return its output, or ``None`` when the pass was stopped at ``stop_at``."""
        if not self._handles:
            raise RuntimeError("NormObserver.forward must be called inside its `with` block")
        try:
            return self.network(x)
        except _StopForward:
            return None

    # -- results of the last forward pass
    def norms(self) -> dict[str, torch.Tensor]:
        """Layer name -> (N,) float32 norms of the counted (last) call; layers not called are absent."""
        return dict(self._norms)

    def stacked_norms(self) -> torch.Tensor:
        """(L, N) float32: the counted norms of every observed layer, rows in ``layer_names`` order. Raises
        ``RuntimeError`` naming the layers that produced no tensor in the last forward pass."""
        missing = [name for name in self.layer_names if name not in self._norms]
        if missing:
            raise RuntimeError(
                f"selected layers produced no output in this forward pass: {', '.join(missing)}"
            )
        return torch.stack([self._norms[name] for name in self.layer_names])

    def call_counts(self) -> dict[str, int]:
        """Layer name -> number of calls that produced a tensor in the last forward pass."""
        return dict(self._calls)

    def execution_order(self) -> list[tuple[str, int]]:
        """(layer, call number) in the order the hooks fired (i.e. the order outputs were produced)."""
        return list(self._order)


def stop_point_from_order(order: Sequence[tuple[str, int]], layer_names: Iterable[str]) -> StopPoint:
    """The counted (last) call of ``layer_names`` that happens latest in an execution order."""
    wanted = set(layer_names)
    last_position: dict[str, int] = {}
    last_call: dict[str, int] = {}
    for position, (name, call) in enumerate(order):
        if name in wanted:
            last_position[name] = position
            last_call[name] = call
    missing = sorted(wanted - set(last_position))
    if missing:
        raise ValueError(f"layers never produced a tensor in the probe pass: {', '.join(missing)}")
    deepest = max(last_position, key=last_position.__getitem__)
    return StopPoint(deepest, last_call[deepest])


def probe_stop_point(network: nn.Module, layer_names: Sequence[str], sample: torch.Tensor) -> StopPoint:
    """Run ``sample`` once with all ``layer_names`` observed and return where a quality-only pass can stop."""
    with torch.inference_mode(), NormObserver(network, layer_names) as observer:
        observer.forward(sample)
        order = observer.execution_order()
    return stop_point_from_order(order, layer_names)


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    """Slices covering ``range(n)`` in chunks of at most ``size``."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
