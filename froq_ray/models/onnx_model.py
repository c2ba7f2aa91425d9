"""ONNX face-recognition models, converted by onnx2torch into a ``torch.fx.GraphModule``.

Converting (rather than running onnxruntime) keeps every ONNX node as a named torch module, so FROQ's forward
hooks can observe internal layers. Module names are onnx2torch's, derived from the ONNX node names
(e.g. ``conv1/conv1/0/Conv``); they contain no dots.

Three practical problems are handled here:

* **torchvision.** onnx2torch imports torchvision at import time, only for its NonMaxSuppression and RoiAlign
  converters, and declares it as a dependency (so it is installed with ``pip install --no-deps onnx2torch``).
  This project never installs torchvision. :func:`import_onnx2torch` puts a stub ``torchvision`` /
  ``torchvision.ops`` into ``sys.modules`` for the duration of that import only; any stub function raises a
  clear error if a graph ever needs it (face-recognition graphs do not). The stub is removed again afterwards,
  so other code that probes ``import torchvision`` still sees it as absent.
* **Fixed batch size.** Models exported with a fixed batch dimension (the MobileFaceNet test asset: 1) are
  rewritten before conversion: the input/output batch dims become symbolic, stale shape annotations are
  dropped, and every ``Reshape`` of an activation whose constant target shape starts with the fixed batch size
  gets a copy of that shape with 0 there (ONNX: "copy this dimension from the input"). The converted graph is
  then checked: a batch of two must equal the two images run one by one (graphs declared with a symbolic
  batch dim are checked too). If that check fails, the graph runs image by image (:class:`PerImageNetwork`;
  hooks then fire once per image). The loaded model's ``options["batching"]`` records which case applied:
  "dynamic", "rewritten" or "per_image".
* **External data.** Weights in ``<model>.onnx.data`` beside the ``.onnx`` are loaded from the model's folder;
  the recorded sha256 covers the graph file and every external data file (see :func:`onnx_weights_digest`).
"""

from __future__ import annotations

import hashlib
import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import InputContract, LoadedModel, ModelLoadError, freeze, sha256_file
from .registry import register_model

log = logging.getLogger(__name__)

ARCFACE_DEFAULTS: dict[str, Any] = {
    "size": 112,
    "channel_order": "RGB",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "alignment": "arcface112",
}
CONTRACT_OPTIONS = tuple(ARCFACE_DEFAULTS)
BATCH_DIM_NAME = "batch"
PROBE_BATCH = 2
PROBE_TOLERANCE = 1e-4  # relative to the output scale; conv algorithms differ slightly between batch sizes

INSTALL_HINT = "install the 'onnx' extra: pip install onnx && pip install --no-deps onnx2torch"


# --------------------------------------------------------------------------------------------------------------
# onnx2torch import shim
# --------------------------------------------------------------------------------------------------------------


def _unavailable(name: str) -> Callable[..., Any]:
    def stub(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(
            f"torchvision.ops.{name} is needed by this ONNX graph (NonMaxSuppression/RoiAlign), but torchvision "
            "is not installed; froq_ray does not install it (face-recognition graphs do not use these ops)"
        )

    stub.__name__ = name
    return stub


def _torchvision_stubs() -> dict[str, types.ModuleType]:
    package = types.ModuleType("torchvision")
    package.__doc__ = "froq_ray stub: torchvision is not installed"
    package.__path__ = []  # a package, so `import torchvision.ops` resolves through sys.modules
    ops = types.ModuleType("torchvision.ops")

    def public_attribute(name: str) -> Callable[..., Any]:
        # PEP 562 module __getattr__: any public name is a function that raises when called. Dunder and private
        # names stay missing, so tools that probe modules (inspect, pickle) are not fooled.
        if name.startswith("_"):
            raise AttributeError(name)
        return _unavailable(name)

    # ModuleType declares neither a __getattr__ to assign nor an `ops` attribute; a stand-in module has both
    ops.__getattr__ = public_attribute  # type: ignore[method-assign]
    package.ops = ops  # type: ignore[attr-defined]
    return {"torchvision": package, "torchvision.ops": ops}


def _torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401 - only whether it imports matters
    except (ImportError, RuntimeError, AttributeError):  # absent, or broken against this torch build
        return False
    return True


def import_onnx2torch() -> types.ModuleType:
    """Import onnx2torch, with a temporary torchvision stub when torchvision cannot be imported."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    stubs = {} if _torchvision_importable() else _torchvision_stubs()
    sys.modules.update(stubs)
    try:
        import onnx2torch
    except ImportError as exc:
        raise ModelLoadError(f"onnx2torch is not importable ({exc}); {INSTALL_HINT}") from exc
    finally:
        for name, module in stubs.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return onnx2torch


def import_onnx() -> types.ModuleType:
    try:
        import onnx
    except ImportError as exc:
        raise ModelLoadError(f"onnx is not installed; {INSTALL_HINT}") from exc
    return onnx


# --------------------------------------------------------------------------------------------------------------
# Reading the model and its external data
# --------------------------------------------------------------------------------------------------------------


def _all_tensors(model: Any) -> list[Any]:
    """Initializers and Constant-node tensors of the main graph: the tensors that may live in external data."""
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors.extend(attr.t for attr in node.attribute if attr.HasField("t"))
    return tensors


def external_data_files(model: Any, folder: Path) -> list[Path]:
    """The external data files a model (loaded without them) refers to, in first-use order."""
    onnx = import_onnx()
    files: list[Path] = []
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location is None:
            raise ModelLoadError(f"tensor {tensor.name!r} is stored externally but names no location")
        path = folder / location
        if path not in files:
            files.append(path)
    return files


def onnx_weights_digest(path: Path, data_files: list[Path]) -> str:
    """sha256 of the ``.onnx`` file alone, or, with external data, sha256 over ``name:sha256`` lines of all files.

    The combined form changes when either the graph or any weight file changes.
    """
    graph_sha = sha256_file(path)
    if not data_files:
        return graph_sha
    lines = [f"{path.name}:{graph_sha}"] + [f"{p.name}:{sha256_file(p)}" for p in data_files]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_onnx(path: Path) -> tuple[Any, str]:
    """Load an ONNX model with its external data; return it and its weights digest."""
    onnx = import_onnx()
    if not path.is_file():
        raise ModelLoadError(f"model weights not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}") from exc
    data_files = external_data_files(model, path.parent)
    missing = [str(p) for p in data_files if not p.is_file()]
    if missing:
        raise ModelLoadError(
            f"ONNX model {path} needs external data files beside it that are missing: {missing}"
        )
    if data_files:
        onnx.load_external_data_for_model(model, str(path.parent))
    return model, onnx_weights_digest(path, data_files)


# --------------------------------------------------------------------------------------------------------------
# Fixed batch size -> symbolic batch size
# --------------------------------------------------------------------------------------------------------------


def graph_input(model: Any) -> Any:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        raise ModelLoadError(f"expected an ONNX graph with one image input, found {[v.name for v in inputs]}")
    return inputs[0]


def input_dims(model: Any) -> list[int | None]:
    """The input's dims: an int where fixed, None where symbolic or unknown."""
    dims = graph_input(model).type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _constant_values(model: Any) -> dict[str, Any]:
    """Name -> TensorProto for initializers and Constant-node outputs."""
    values = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = attr.t
    return values


def make_batch_dynamic(model: Any, fixed: int) -> list[str]:
    """Rewrite ``model`` in place so its batch dimension is symbolic; return a description of each change."""
    onnx = import_onnx()
    numpy_helper = onnx.numpy_helper
    changes = []
    for value in [graph_input(model), *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == fixed:
            dims[0].dim_param = BATCH_DIM_NAME
            changes.append(f"{value.name}: batch dim {fixed} -> {BATCH_DIM_NAME}")
    del model.graph.value_info[:]  # annotations inferred for the fixed batch; onnx2torch re-infers them
    constants = _constant_values(model)
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        allowzero = next((a.i for a in node.attribute if a.name == "allowzero"), 0)
        data, shape_name = node.input[0], node.input[1]
        if allowzero or data in constants or shape_name not in constants:
            continue
        shape = numpy_helper.to_array(constants[shape_name])
        if shape.ndim != 1 or shape.size == 0 or shape[0] != fixed:
            continue
        new_shape = shape.copy()
        new_shape[0] = 0
        new_name = f"{shape_name}__froq_dynamic_batch"
        model.graph.initializer.append(numpy_helper.from_array(new_shape.astype(np.int64), new_name))
        node.input[1] = new_name
        changes.append(f"{node.name or node.output[0]}: Reshape {shape.tolist()} -> {new_shape.tolist()}")
    return changes


def copy_model(model: Any) -> Any:
    onnx = import_onnx()
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


class PerImageNetwork(nn.Module):
    """Runs a graph that only accepts batch size 1 image by image. Hooks on ``graph.*`` fire once per image."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.graph(x[i : i + 1]) for i in range(x.shape[0])])


def _run(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = network(x)
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(f"ONNX model must have a single embedding output, got a {type(out).__name__}")
    return out


def batches_correctly(network: nn.Module, probe: torch.Tensor) -> bool:
    """Whether a batch gives the same outputs as its images one by one."""
    try:
        batched = _run(network, probe)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the batched run means "does not batch"
        log.info("batched run of the rewritten ONNX graph failed: %s", exc)
        return False
    single = torch.cat([_run(network, probe[i : i + 1]) for i in range(probe.shape[0])])
    if batched.shape != single.shape:
        return False
    scale = float(single.abs().max().clamp_min(1.0))
    return bool((batched - single).abs().max() <= PROBE_TOLERANCE * scale)


def _rewritten_network(model: Any, fixed: int, probe: torch.Tensor, convert: Callable) -> nn.Module | None:
    """The converted graph with a symbolic batch dim, or None when the rewrite does not batch correctly."""
    rewritten = copy_model(model)
    changes = make_batch_dynamic(rewritten, fixed)
    try:
        network = convert(rewritten)
        if batches_correctly(network, probe):
            log.info("ONNX batch dim %d made symbolic: %s", fixed, "; ".join(changes))
            return network
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the rewritten graph means: fall back
        log.info("converting the batch-rewritten ONNX graph failed: %s", exc)
    return None


def convert_with_batching(model: Any, size: int) -> tuple[nn.Module, str]:
    """Convert to torch; return the network and how it batches: "dynamic", "rewritten" or "per_image".

    Every outcome is probed: a graph that declares a symbolic batch dim but hard-codes it somewhere
    (a ``Reshape`` to ``[1, -1]``, say) is caught as well, and then runs image by image.
    """
    convert = import_onnx2torch().convert
    probe = torch.randn(PROBE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    fixed = input_dims(model)[0]
    if fixed is None:
        network = convert(model)
        if batches_correctly(network, probe):
            return network, "dynamic"
        log.warning("ONNX model declares a symbolic batch dim but does not batch: running images one by one")
        return PerImageNetwork(network), "per_image"
    network = _rewritten_network(model, fixed, probe, convert)
    if network is not None:
        return network, "rewritten"
    if fixed != 1:
        raise ModelLoadError(f"ONNX model has a fixed batch size {fixed} that could not be made symbolic")
    log.warning(
        "ONNX model has a fixed batch size 1 that could not be made symbolic: running images one by one"
    )
    return PerImageNetwork(convert(model)), "per_image"


# --------------------------------------------------------------------------------------------------------------
# Input contract from options
# --------------------------------------------------------------------------------------------------------------


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except TypeError as exc:
        raise ModelLoadError(f"option {name!r} must be three numbers (RGB order, pixel/255 units)") from exc
    if len(triple) != 3:
        raise ModelLoadError(
            f"option {name!r} must be three numbers (RGB order, pixel/255 units), got {value!r}"
        )
    return triple


def contract_from_options(options: dict[str, Any], dims: list[int | None]) -> InputContract:
    """Options override the ArcFace defaults; ``size`` defaults to the graph's static input size."""
    unknown = sorted(set(options) - set(CONTRACT_OPTIONS))
    if unknown:
        raise ModelLoadError(f"unknown option(s) {unknown} for model 'onnx'; known: {list(CONTRACT_OPTIONS)}")
    if len(dims) != 4 or dims[1] not in (3, None):
        raise ModelLoadError(f"ONNX input must be N x 3 x H x W, got dims {dims}")
    graph_size = dims[2] if dims[2] is not None and dims[2] == dims[3] else None
    size = int(options.get("size", graph_size or ARCFACE_DEFAULTS["size"]))
    if graph_size is not None and size != graph_size:
        raise ModelLoadError(
            f"option size={size} but the ONNX graph's input is fixed to {graph_size}x{graph_size}"
        )
    try:
        return InputContract(
            size=size,
            channel_order=str(options.get("channel_order", ARCFACE_DEFAULTS["channel_order"])),
            mean=_triple("mean", options.get("mean", ARCFACE_DEFAULTS["mean"])),
            std=_triple("std", options.get("std", ARCFACE_DEFAULTS["std"])),
            alignment=str(options.get("alignment", ARCFACE_DEFAULTS["alignment"])),
        )
    except ValueError as exc:
        raise ModelLoadError(f"invalid option for model 'onnx': {exc}") from exc


def embedding_size_of(network: nn.Module, size: int) -> int:
    out = _run(network, torch.zeros(1, 3, size, size))
    if out.dim() != 2 or out.shape[0] != 1:
        raise ModelLoadError(f"ONNX model output must be (N, D) embeddings, got shape {tuple(out.shape)}")
    return int(out.shape[1])


@register_model(
    "onnx",
    family="onnx",
    needs_weights=True,
    weights_hint="an .onnx file",
    description="any ONNX face-recognition model via onnx2torch (options: size, channel_order, mean, std, alignment)",
)
def load_onnx_model(weights: str, options: dict[str, Any]) -> LoadedModel:
    path = Path(weights)
    model, digest = read_onnx(path)
    contract = contract_from_options(options, input_dims(model))
    try:
        network, batching = convert_with_batching(model, contract.size)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"onnx2torch cannot convert {path}: {type(exc).__name__}: {exc}") from exc
    freeze(network)
    # The user's options (JSON-friendly) plus how the graph batches, which identifies the converted network.
    recorded = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(options.items())}
    recorded["batching"] = batching
    return LoadedModel(
        name="onnx",
        family="onnx",
        network=network,
        contract=contract,
        embedding_size=embedding_size_of(network, contract.size),
        weights_path=str(path),
        weights_sha256=digest,
        options=recorded,
    )
