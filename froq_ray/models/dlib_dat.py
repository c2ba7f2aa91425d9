"""A reader for dlib's binary serialisation of a DNN (the ``.dat`` files of dlib-models).

Only what a trained metric-learning network of plain layers needs is supported; anything else fails with a
:class:`ModelLoadError` naming the byte offset and what was found there.

Primitive encodings (dlib/serialize.h):

- integer: a control byte (low 4 bits = number of value bytes, bit 7 = negative), then the magnitude in that
  many little-endian bytes. ``01 0d`` = 13, ``81 1c`` = -28.
- string: an integer length, then the raw bytes.
- float/double: integer mantissa then integer exponent, value = mantissa * 2**exponent (exponents 32000,
  32001, 32002 stand for +inf, -inf, NaN).
- bool: one ASCII byte, ``'1'`` or ``'0'``.
- tensor: integer version; 2 = num_samples, k, nr, nc then that many little-endian float32 values;
  1 = an alias (a view into a layer's params) with the four dimensions only.

Network layout (dlib/dnn/core.h): ``add_loss_layer`` writes its version, the loss details, then its
sub-network. Every wrapper writes its version *before* its sub-network and its own layer details *after*
it, so the file holds the output-side wrappers' version numbers first, then the input layer, then the
layers' details from the input side to the output. Computational layers (``add_layer``) have version 2,
or 2/3 for the one directly on the input; the residual wiring (``tag``/``skip`` wrappers) has version 1 and
writes nothing after its sub-network. After each computational layer's details come three bools and three
tensors of training state (plus, for version 3, the sample expansion factor), all ignored here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import ModelLoadError

# A wrapper version is at most 3; the input layer's type string (e.g. "input_rgb_image_sized") has a longer
# length prefix, which is how the run of wrapper versions is told apart from the input layer that follows.
_MAX_WRAPPER_VERSION = 3
_TAG_OR_SKIP_VERSION = 1
_FLOAT_SPECIAL_EXPONENTS = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}


@dataclass(frozen=True)
class TensorRecord:
    """A serialised tensor: its 4-d shape and, unless it is an alias (a view), its float32 values."""

    shape: tuple[int, int, int, int]
    values: np.ndarray | None  # float32, flat; None for an alias

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class DlibLayer:
    """One computational layer: ``kind`` is the type without version (``con``, ``affine``, ``relu`` ...).

    ``wiring_before`` counts the tag/skip wrappers between this layer and the previous one (the residual
    wiring's trace, used to check that a file has the architecture a port expects).
    """

    kind: str
    version: str
    params: np.ndarray | None
    settings: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, TensorRecord] = field(default_factory=dict)
    wiring_before: int = 0
    offset: int = 0


@dataclass
class DlibNetwork:
    """A parsed ``.dat`` network: loss, input layer and computational layers from the input side."""

    loss: dict[str, Any]
    input: dict[str, Any]
    layers: list[DlibLayer]

    def kinds(self) -> list[str]:
        return [layer.kind for layer in self.layers]


class DatReader:
    """Sequential reader of dlib's primitive encodings over a bytes buffer."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def error(self, message: str, at: int | None = None) -> ModelLoadError:
        where = self.pos if at is None else at
        return ModelLoadError(f"cannot parse dlib model {self.source} at byte {where}: {message}")

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.error(f"file ends inside {what} (needs {n} bytes, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def read_int(self, what: str = "an integer") -> int:
        start = self.pos
        control = self.take(1, what)[0]
        n_bytes = control & 0x0F
        if n_bytes == 0 or n_bytes > 8 or control & 0x70:
            raise self.error(f"bad control byte 0x{control:02x} for {what}", at=start)
        magnitude = int.from_bytes(self.take(n_bytes, what), "little")
        return -magnitude if control & 0x80 else magnitude

    def read_string(self, what: str = "a string", max_length: int = 1 << 16) -> str:
        start = self.pos
        length = self.read_int(f"the length of {what}")
        if length < 0 or length > max_length:
            raise self.error(f"implausible length {length} for {what}", at=start)
        raw = bytes(self.take(length, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise self.error(f"{what} is not ASCII text: {raw[:32]!r}", at=start) from exc

    def read_float(self, what: str = "a floating point number") -> float:
        mantissa = self.read_int(f"the mantissa of {what}")
        exponent = self.read_int(f"the exponent of {what}")
        if exponent in _FLOAT_SPECIAL_EXPONENTS:
            return _FLOAT_SPECIAL_EXPONENTS[exponent]
        return float(mantissa) * 2.0**exponent

    def read_bool(self, what: str = "a bool") -> bool:
        start = self.pos
        ch = bytes(self.take(1, what))
        if ch not in (b"0", b"1"):
            raise self.error(f"bad byte {ch!r} for {what}", at=start)
        return ch == b"1"

    def read_tensor(self, what: str = "a tensor") -> TensorRecord:
        start = self.pos
        version = self.read_int(f"the version of {what}")
        if version not in (1, 2):
            raise self.error(f"unknown tensor version {version} for {what}", at=start)
        dims = tuple(self.read_int(f"a dimension of {what}") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"negative dimension in {what}: {dims}", at=start)
        shape = (dims[0], dims[1], dims[2], dims[3])
        if version == 1:
            return TensorRecord(shape, None)
        count = int(np.prod(shape))
        raw = self.take(4 * count, f"the {count} values of {what}")
        return TensorRecord(shape, np.frombuffer(raw, dtype="<f4").astype(np.float32))

    def peek_int(self) -> int:
        start = self.pos
        try:
            return self.read_int()
        finally:
            self.pos = start


# ---------------------------------------------------------------------------------------------------
# Layer details, one reader per layer type (field order from dlib/dnn/layers.h).


def _read_multipliers(r: DatReader, settings: dict[str, Any]) -> None:
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        settings[name] = r.read_float(name)


def _params_values(tensor: TensorRecord, what: str, r: DatReader) -> np.ndarray:
    if tensor.values is None:
        raise r.error(f"{what} params are an alias, expected values")
    return tensor.values


def _read_con(r: DatReader, version: str) -> DlibLayer:
    params = r.read_tensor("con params")
    s: dict[str, Any] = {}
    for name in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
        s[name] = r.read_int(f"con {name}")
    aliases = {"filters": r.read_tensor("con filters"), "biases": r.read_tensor("con biases")}
    _read_multipliers(r, s)
    s["use_bias"] = r.read_bool("con use_bias") if version in ("con_5", "con_6") else True
    s["use_relu"] = r.read_bool("con use_relu") if version == "con_6" else False
    return DlibLayer("con", version, _params_values(params, "con", r), s, aliases)


def _read_fc(r: DatReader, version: str) -> DlibLayer:
    s: dict[str, Any] = {
        "num_outputs": r.read_int("fc num_outputs"),
        "num_inputs": r.read_int("fc num_inputs"),
    }
    params = r.read_tensor("fc params")
    aliases = {"weights": r.read_tensor("fc weights"), "biases": r.read_tensor("fc biases")}
    s["bias_mode"] = r.read_int("fc bias mode")  # 0 = with bias, 1 = no bias
    _read_multipliers(r, s)
    use_bias = r.read_bool("fc use_bias") if version == "fc_3" else True
    s["has_bias"] = use_bias and s["bias_mode"] == 0
    return DlibLayer("fc", version, _params_values(params, "fc", r), s, aliases)


def _read_affine(r: DatReader, version: str) -> DlibLayer:
    params = r.read_tensor("affine params")
    aliases = {"gamma": r.read_tensor("affine gamma"), "beta": r.read_tensor("affine beta")}
    s: dict[str, Any] = {"mode": r.read_int("affine mode")}  # 0 = per channel (conv), 1 = per element (fc)
    s["disabled"] = r.read_bool("affine disabled") if version == "affine_2" else False
    return DlibLayer("affine", version, _params_values(params, "affine", r), s, aliases)


def _read_relu(r: DatReader, version: str) -> DlibLayer:
    disabled = r.read_bool("relu disabled") if version == "relu_2" else False
    return DlibLayer("relu", version, None, {"disabled": disabled})


def _read_pool(kind: str) -> Callable[[DatReader, str], DlibLayer]:
    def read(r: DatReader, version: str) -> DlibLayer:
        s = {
            name: r.read_int(f"{kind} {name}")
            for name in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        }
        return DlibLayer(kind, version, None, s)

    return read


def _read_add_prev(_r: DatReader, version: str) -> DlibLayer:  # no parameters to read
    return DlibLayer("add_prev", version, None)


_LAYER_READERS: dict[str, Callable[[DatReader, str], DlibLayer]] = {
    "con_4": _read_con,
    "con_5": _read_con,
    "con_6": _read_con,
    "fc_2": _read_fc,
    "fc_3": _read_fc,
    "affine_": _read_affine,
    "affine_2": _read_affine,
    "relu_": _read_relu,
    "relu_2": _read_relu,
    "max_pool_2": _read_pool("max_pool"),
    "avg_pool_2": _read_pool("avg_pool"),
    "add_prev_": _read_add_prev,
}


def _read_loss(r: DatReader) -> dict[str, Any]:
    start = r.pos
    version = r.read_string("the loss layer type")
    if version == "loss_metric_2":
        return {
            "type": version,
            "margin": r.read_float("loss margin"),
            "distance_threshold": r.read_float("loss threshold"),
        }
    if version == "loss_metric_":
        return {"type": version, "margin": 0.04, "distance_threshold": 0.6}
    raise r.error(f"unsupported loss layer {version!r} (only dlib's metric loss is supported)", at=start)


def _read_input(r: DatReader) -> dict[str, Any]:
    start = r.pos
    version = r.read_string("the input layer type")
    if version not in ("input_rgb_image_sized", "input_rgb_image"):
        raise r.error(f"unsupported input layer {version!r}", at=start)
    out: dict[str, Any] = {"type": version}
    out["mean_rgb"] = tuple(r.read_float(f"input mean {c}") for c in "RGB")
    if version == "input_rgb_image_sized":
        out["nr"] = r.read_int("input rows")
        out["nc"] = r.read_int("input columns")
    return out


def _read_layer(r: DatReader) -> DlibLayer:
    start = r.pos
    version = r.read_string("a layer type")
    reader = _LAYER_READERS.get(version)
    if reader is None:
        raise r.error(
            f"unsupported layer type {version!r}; supported: {', '.join(sorted(_LAYER_READERS))}", at=start
        )
    layer = reader(r, version)
    layer.offset = start
    return layer


def _skip_training_state(r: DatReader, wrapper_version: int, on_input: bool) -> None:
    """The three bools and three tensors of training state after a layer's details (and its sample
    expansion factor for a version-3 layer on the input)."""
    for name in ("setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        r.read_bool(name)
    for name in ("x_grad", "cached_output", "grad_final" if on_input else "params_grad"):
        r.read_tensor(name)
    if on_input and wrapper_version >= 3:
        r.read_int("sample expansion factor")


def _read_wrapper_versions(r: DatReader) -> list[int]:
    """Versions of the nested wrappers, output side first, up to the input layer's type string."""
    versions: list[int] = []
    while True:
        start = r.pos
        value = r.peek_int()
        if value > _MAX_WRAPPER_VERSION:
            break
        if value < _TAG_OR_SKIP_VERSION:
            raise r.error(f"bad wrapper version {value}", at=start)
        versions.append(r.read_int())
    if not versions:
        raise r.error("no network layers after the loss layer")
    if versions[-1] not in (2, 3):
        raise r.error(f"the layer on the input has wrapper version {versions[-1]}, expected 2 or 3")
    if any(v == 3 for v in versions[:-1]):
        raise r.error("wrapper version 3 away from the input layer")
    return versions


def parse_dlib_dat(data: bytes, source: str = "<bytes>") -> DlibNetwork:
    """Parse a whole ``.dat`` network (loss, input, layers) and require that nothing follows it."""
    r = DatReader(data, source)
    loss_version = r.read_int("the loss wrapper version")
    if loss_version != 1:
        raise r.error(f"not a dlib network file: loss wrapper version {loss_version}, expected 1", at=0)
    loss = _read_loss(r)
    wrappers = _read_wrapper_versions(r)
    net_input = _read_input(r)

    layers: list[DlibLayer] = []
    pending_wiring = 0
    # Details follow in the reverse order of the wrapper versions: input side first.
    for index, version in enumerate(reversed(wrappers)):
        if version == _TAG_OR_SKIP_VERSION:
            pending_wiring += 1
            continue
        layer = _read_layer(r)
        layer.wiring_before = pending_wiring
        pending_wiring = 0
        _skip_training_state(r, version, on_input=index == 0)
        layers.append(layer)
    if pending_wiring:
        raise r.error(f"{pending_wiring} tag/skip wrapper(s) on the output side of the last layer")
    if not r.at_end():
        raise r.error(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return DlibNetwork(loss=loss, input=net_input, layers=layers)


def read_dlib_dat(path: str | os.PathLike) -> DlibNetwork:
    """Read and parse a ``.dat`` network file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"dlib model file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    return parse_dlib_dat(data, source=path)


# ---------------------------------------------------------------------------------------------------
# Writers for the primitive encodings: used by tests to build byte strings by hand, and documenting the
# format from the other side.


def encode_int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    if len(body) > 8:
        raise ValueError(f"{value} does not fit dlib's 8-byte integers")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def encode_string(text: str) -> bytes:
    raw = text.encode("ascii")
    return encode_int(len(raw)) + raw


def encode_float(mantissa: int, exponent: int) -> bytes:
    return encode_int(mantissa) + encode_int(exponent)


def encode_tensor(values: np.ndarray) -> bytes:
    """A version-2 tensor of ``values`` (up to 4-d, padded with leading ones)."""
    shape = (1,) * (4 - values.ndim) + tuple(values.shape)
    header = encode_int(2) + b"".join(encode_int(d) for d in shape)
    return header + struct.pack(f"<{values.size}f", *values.astype(np.float32).ravel())
