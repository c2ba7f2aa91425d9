"""dlib .dat parser and the PyTorch port of dlib's face recognition ResNet, checked against dlib itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dlib
import numpy as np
import pytest
import torch
from PIL import Image

from froq_ray.imaging.align import warp_arcface_to_dlib_chip
from froq_ray.models import dlib_dat, dlib_resnet
from froq_ray.models.base import ModelLoadError, sha256_file
from froq_ray.models.dlib_dat import (
    DatReader,
    encode_float,
    encode_int,
    encode_string,
    encode_tensor,
    parse_dlib_dat,
)
from froq_ray.models.registry import _REGISTRY

LFW_IMAGES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "lfw-dev" / "images"


@pytest.fixture(scope="module")
def dat_path() -> str:
    return dlib_resnet.builtin_weights_path()


@pytest.fixture(scope="module")
def dat_bytes(dat_path: str) -> bytes:
    return Path(dat_path).read_bytes()


@pytest.fixture(scope="module")
def parsed(dat_bytes: bytes) -> dlib_dat.DlibNetwork:
    return parse_dlib_dat(dat_bytes)


@pytest.fixture(scope="module")
def model() -> dlib_resnet.LoadedModel:
    return dlib_resnet.load_dlib_resnet_v1(None, {})


@pytest.fixture(scope="module")
def oracle(dat_path: str) -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(dat_path)


@pytest.fixture(scope="module")
def lfw_crops() -> np.ndarray:
    files = sorted(LFW_IMAGES.glob("*/*.jpg"))[::181][:20]  # 20 crops of 20 different people
    assert len(files) == 20
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def to_chips(crops: np.ndarray) -> np.ndarray:
    """uint8 NHWC ArcFace crops -> uint8 NHWC 150x150 dlib chips through the port's warp."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    chips = warp_arcface_to_dlib_chip(x).round().clamp(0, 255).to(torch.uint8)
    return chips.permute(0, 2, 3, 1).contiguous().numpy()


def port_descriptors(network: torch.nn.Module, chips: np.ndarray) -> np.ndarray:
    """dlib's input layer by hand: (pixel - mean) / 256 per RGB channel."""
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).double()
    mean = torch.tensor(dlib_resnet.MEAN_RGB_PIXELS, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        return network(((x - mean) / 256.0).float()).double().numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ---------------------------------------------------------------------------------------------------
# Parser primitives on hand-built bytes.


@pytest.mark.parametrize(
    "raw, value",
    [
        (b"\x01\x0d", 13),
        (b"\x01\x00", 0),
        (b"\x81\x1c", -28),
        (b"\x02\x2c\x01", 300),
        (b"\x82\x00\x80", -32768),
        (b"\x04\x78\x56\x34\x12", 0x12345678),
    ],
)
def test_read_int(raw: bytes, value: int) -> None:
    reader = DatReader(raw)
    assert reader.read_int() == value and reader.at_end()
    assert encode_int(value) == raw


@pytest.mark.parametrize("raw", [b"\x00", b"\x09" + bytes(9), b"\x11\x01", b"\x02\x01"])
def test_read_int_rejects_bad_or_short_input(raw: bytes) -> None:
    with pytest.raises(ModelLoadError, match="byte"):
        DatReader(raw).read_int()


def test_read_string_float_bool() -> None:
    # margin of the real file: mantissa 0xa3d70a, exponent -28
    reader = DatReader(b"\x01\x05hello" + b"\x03\x0a\xd7\xa3\x81\x1c" + b"\x01\x03\x01\x00" + b"10")
    assert reader.read_string() == "hello"
    assert reader.read_float() == 0xA3D70A * 2.0**-28 == pytest.approx(0.04, rel=1e-7)
    assert reader.read_float() == 3.0  # mantissa 3, exponent 0
    assert reader.read_bool() is True and reader.read_bool() is False and reader.at_end()
    assert DatReader(encode_float(-3, -1)).read_float() == -1.5
    assert DatReader(encode_float(0, 32000)).read_float() == float("inf")
    with pytest.raises(ModelLoadError, match="bool"):
        DatReader(b"x").read_bool()


def test_read_tensor_and_alias() -> None:
    values = np.arange(6, dtype="<f4") * 0.5
    raw = b"\x01\x02" + b"\x01\x01\x01\x02\x01\x01\x01\x03" + values.tobytes()
    tensor = DatReader(raw).read_tensor()
    assert tensor.shape == (1, 2, 1, 3) and np.array_equal(tensor.values, values)
    assert encode_tensor(values.reshape(1, 2, 1, 3)) == raw
    alias = DatReader(b"\x01\x01\x01\x20\x01\x03\x01\x07\x01\x07").read_tensor()
    assert alias.shape == (32, 3, 7, 7) and alias.values is None and alias.size == 32 * 147
    with pytest.raises(ModelLoadError, match="ends inside"):
        DatReader(raw[:-1]).read_tensor()


def tiny_network_bytes(with_tag: bool) -> bytes:
    """input -> con 2x3x1x1 -> (tag) -> relu, written by hand in dlib's layout."""
    state = b"000" + encode_tensor(np.zeros((0, 0, 0, 0))) * 3
    con = (
        encode_string("con_4")
        + encode_tensor(np.arange(8.0))
        + b"".join(map(encode_int, (2, 1, 1, 1, 1, 0, 0)))
        + encode_int(1)
        + b"".join(map(encode_int, (2, 3, 1, 1)))
        + encode_int(1)
        + b"".join(map(encode_int, (1, 2, 1, 1)))
        + encode_float(1, 0) * 2
        + encode_float(1, 0)
        + encode_float(0, 0)
    )
    return (
        encode_int(1)
        + encode_string("loss_metric_2")
        + encode_float(1, -1)
        + encode_float(3, -2)
        + encode_int(2)
        + (encode_int(1) if with_tag else b"")
        + encode_int(3)
        + encode_string("input_rgb_image_sized")
        + encode_float(1, 0) * 3
        + encode_int(150)
        + encode_int(150)
        + con
        + state
        + encode_int(1)
        + encode_string("relu_")
        + state
    )


@pytest.mark.parametrize("with_tag", [False, True])
def test_parse_hand_built_network(with_tag: bool) -> None:
    net = parse_dlib_dat(tiny_network_bytes(with_tag))
    assert net.loss == {"type": "loss_metric_2", "margin": 0.5, "distance_threshold": 0.75}
    assert net.input["nr"] == 150 and net.input["mean_rgb"] == (1.0, 1.0, 1.0)
    assert net.kinds() == ["con", "relu"]
    con = net.layers[0]
    assert (
        con.settings["num_filters"] == 2
        and con.settings["padding_y"] == 0
        and con.aliases["filters"].shape == (2, 3, 1, 1)
    )
    assert np.array_equal(con.params, np.arange(8.0, dtype=np.float32))
    assert net.layers[1].wiring_before == (1 if with_tag else 0)


def test_parse_rejects_unknown_layer_and_trailing_bytes() -> None:
    raw = tiny_network_bytes(False)
    with pytest.raises(ModelLoadError, match="unsupported layer type 'relv_'"):
        parse_dlib_dat(raw.replace(b"relu_", b"relv_"))
    with pytest.raises(ModelLoadError, match="unexpected bytes"):
        parse_dlib_dat(raw + b"\x01\x01")


# ---------------------------------------------------------------------------------------------------
# The real file.


def test_builtin_file_identity(dat_path: str) -> None:
    assert Path(dat_path).name == "dlib_face_recognition_resnet_model_v1.dat"
    assert Path(dat_path).stat().st_size == 22_466_066
    assert sha256_file(dat_path) == dlib_resnet.BUILTIN_SHA256


def test_real_file_structure(parsed: dlib_dat.DlibNetwork) -> None:
    assert parsed.loss["type"] == "loss_metric_2"
    assert parsed.loss["margin"] == pytest.approx(0.04) and parsed.loss[
        "distance_threshold"
    ] == pytest.approx(0.6)
    assert parsed.input["mean_rgb"] == pytest.approx(dlib_resnet.MEAN_RGB_PIXELS, abs=1e-4)
    kinds = parsed.kinds()
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {
        "con": 29,
        "affine": 29,
        "relu": 29,
        "add_prev": 14,
        "avg_pool": 5,
        "max_pool": 1,
        "fc": 1,
    }
    first = parsed.layers[0]
    assert first.kind == "con" and first.params.size == 32 * 3 * 7 * 7 + 32 == 4736
    for layer in parsed.layers:
        if layer.kind == "con":  # dlib pads only stride-1 convolutions
            s = layer.settings
            assert (s["padding_y"], s["padding_x"]) == ((s["nr"] // 2,) * 2 if s["stride_y"] == 1 else (0, 0))
    fc = parsed.layers[-1]
    assert fc.kind == "fc" and fc.settings["num_outputs"] == 128 and not fc.settings["has_bias"]


@pytest.mark.parametrize("cut", [1, 30, 300, 5000, 11_000_000, -1])
def test_truncated_file_fails_clearly(dat_bytes: bytes, cut: int) -> None:
    with pytest.raises(ModelLoadError, match="cannot parse dlib model"):
        parse_dlib_dat(dat_bytes[:cut])


@pytest.mark.parametrize("head", [b"\x01\x02", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04"])
def test_wrong_file_fails_clearly(dat_bytes: bytes, head: bytes) -> None:
    with pytest.raises(ModelLoadError, match="cannot parse dlib model"):
        parse_dlib_dat(head + dat_bytes[len(head) :])


def test_read_dlib_dat_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        dlib_dat.read_dlib_dat(tmp_path / "none.dat")


# ---------------------------------------------------------------------------------------------------
# The network.


def test_named_modules_and_stage_sizes(model: dlib_resnet.LoadedModel) -> None:
    network = model.network
    names = dict(network.named_modules())
    for name in (
        "stem.conv",
        "stem.affine",
        "stem.pool",
        "stage1.0",
        "stage1.2.conv2",
        "stage2.0.shortcut",
        "stage5.0",
        "pool",
        "fc",
    ):
        assert name in names
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        names[n].register_forward_hook(lambda _m, _i, o, n=n: sizes.__setitem__(n, tuple(o.shape)))
        for n in ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "fc")
    ]
    with torch.no_grad():
        network(torch.zeros(2, 3, 150, 150))
    for hook in hooks:
        hook.remove()
    assert sizes == {
        "stem": (2, 32, 35, 35),
        "stage1": (2, 32, 35, 35),
        "stage2": (2, 64, 17, 17),
        "stage3": (2, 128, 8, 8),
        "stage4": (2, 256, 4, 4),
        "stage5": (2, 256, 2, 2),
        "fc": (2, 128),
    }
    assert not any(p.requires_grad for p in network.parameters()) and not network.training


def test_add_zero_padded_matches_manual_padding() -> None:
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 2, 4, 4)
    expected = np.zeros((2, 4, 4, 4), dtype=np.float32)
    expected[:, :, :3, :3] += a.numpy()
    expected[:, :2, :, :] += b.numpy()
    assert np.allclose(dlib_resnet.add_zero_padded(a, b).numpy(), expected)
    assert np.allclose(dlib_resnet.add_zero_padded(b, a).numpy(), expected)


def test_port_matches_dlib_on_real_faces(model, oracle, lfw_crops: np.ndarray) -> None:
    chips = to_chips(lfw_crops)
    ours = port_descriptors(model.network, chips)
    reference = np.array([np.array(d) for d in oracle.compute_face_descriptor(list(chips))])
    cos = cosine(ours, reference)
    print(
        f"port vs dlib on {len(chips)} LFW chips: min cosine {cos.min():.8f}, "
        f"max abs diff {np.abs(ours - reference).max():.2e}"
    )
    assert cos.min() >= 0.9999
    assert np.abs(ours - reference).max() < 1e-4
    assert np.linalg.norm(reference, axis=1).min() > 0.5  # real, non-trivial descriptors


def test_input_transform_on_arcface_crops(model, oracle, lfw_crops: np.ndarray) -> None:
    """The model's own input path (uint8 112 crops -> warp -> normalise) agrees with dlib on the same chips
    (up to dlib's uint8 rounding of the chip)."""
    transform = model.input_transform()
    with torch.no_grad():
        ours = model.network(transform(torch.from_numpy(lfw_crops))).double().numpy()
    reference = np.array([np.array(d) for d in oracle.compute_face_descriptor(list(to_chips(lfw_crops)))])
    cos = cosine(ours, reference)
    print(f"input transform path vs dlib on rounded chips: min cosine {cos.min():.6f}")
    assert cos.min() > 0.999
    assert model.contract.size == 150 and model.contract.alignment == "dlib_chip150"


def test_loaded_model_record(model, dat_path: str) -> None:
    assert model.embedding_size == 128 and model.family == "dlib"
    assert model.weights_sha256 == dlib_resnet.BUILTIN_SHA256 and model.weights_path == dat_path
    entry = _REGISTRY["dlib_resnet_v1"]
    assert (
        entry.family == "dlib"
        and not entry.needs_weights
        and entry.factory is dlib_resnet.load_dlib_resnet_v1
    )


def test_weights_override_with_state_dict(model, tmp_path: Path) -> None:
    path = tmp_path / "dlib_port.pt"
    torch.save(model.network.state_dict(), path)
    other = dlib_resnet.load_dlib_resnet_v1(str(path), {})
    x = torch.randn(1, 3, 150, 150)
    with torch.no_grad():
        assert torch.equal(other.network(x), model.network(x))
    assert other.weights_sha256 == sha256_file(path)
    state = model.network.state_dict()
    state.pop("fc.weight")
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match="missing keys: fc.weight"):
        dlib_resnet.load_dlib_resnet_v1(str(path), {})


def test_rejects_options() -> None:
    with pytest.raises(ModelLoadError, match="no options"):
        dlib_resnet.load_dlib_resnet_v1(None, {"channel_order": "BGR"})


def test_mismatched_file_layers_fail_clearly(parsed: dlib_dat.DlibNetwork) -> None:
    network = dlib_resnet.DlibResNet()
    layers = list(parsed.layers)
    con = layers[4]
    layers[4] = dataclasses.replace(con, settings={**con.settings, "padding_y": 0})
    with pytest.raises(ModelLoadError, match="stage1.0.conv1"):
        dlib_resnet.state_from_dat(network, dataclasses.replace(parsed, layers=layers))
    with pytest.raises(ModelLoadError, match="different network"):
        dlib_resnet.state_from_dat(network, dataclasses.replace(parsed, layers=parsed.layers[:-1]))
    rewired = list(parsed.layers)
    rewired[4] = dataclasses.replace(parsed.layers[4], wiring_before=0)
    with pytest.raises(ModelLoadError, match="residual wiring"):
        dlib_resnet.state_from_dat(network, dataclasses.replace(parsed, layers=rewired))


@pytest.mark.parametrize(
    "mean_rgb",
    [
        dlib_resnet.MEAN_RGB_PIXELS[:2],  # a short list used to pass: zip stopped at the shorter one
        (*dlib_resnet.MEAN_RGB_PIXELS, 0.0),
        (dlib_resnet.MEAN_RGB_PIXELS[0] + 1.0, *dlib_resnet.MEAN_RGB_PIXELS[1:]),
    ],
)
def test_input_layer_with_other_means_is_refused(mean_rgb) -> None:
    net = dlib_dat.DlibNetwork(loss={}, input={"nr": 150, "nc": 150, "mean_rgb": mean_rgb}, layers=[])
    with pytest.raises(ModelLoadError, match="does not match the contract"):
        dlib_resnet._check_input(net)
    fine = dataclasses.replace(net, input={**net.input, "mean_rgb": dlib_resnet.MEAN_RGB_PIXELS})
    dlib_resnet._check_input(fine)  # the contract's own means pass
