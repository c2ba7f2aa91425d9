"""ONNX models through onnx2torch: the MobileFaceNet asset against the state-dict model on real crops, the batch
rewrite for fixed-batch exports, the per-image fallback, the torchvision import shim and option/file errors."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from froq_ray.models import ModelLoadError, load_model
from froq_ray.models.onnx_model import import_onnx2torch, make_batch_dynamic

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
REAL_CROPS = 10


@pytest.fixture(scope="module")
def onnx_path(shared_dir: Path) -> Path:
    return shared_dir / "models" / "mobilefacenet" / "MobileFaceNet.onnx"


@pytest.fixture(scope="module")
def onnx_model(onnx_path: Path):
    return load_model("onnx", str(onnx_path), IMAGENET)


@pytest.fixture(scope="module")
def state_dict_model(mobilefacenet_pt: Path):
    return load_model("mobilefacenet", str(mobilefacenet_pt))


@pytest.fixture(scope="module")
def real_inputs(lfw_dev_dir: Path, state_dict_model) -> torch.Tensor:
    """Network input for the first REAL_CROPS LFW-dev crops (one per identity folder, sorted)."""
    folders = sorted(p for p in (lfw_dev_dir / "images").iterdir() if p.is_dir())[:REAL_CROPS]
    crops = np.stack([np.asarray(Image.open(min(f.glob("*.jpg"))).convert("RGB")) for f in folders])
    return state_dict_model.input_transform()(torch.from_numpy(crops))


def test_onnx_matches_the_state_dict_model_on_a_batch_of_real_crops(
    onnx_model, state_dict_model, real_inputs: torch.Tensor
) -> None:
    assert onnx_model.contract == state_dict_model.contract
    with torch.inference_mode():
        from_onnx = onnx_model.network(real_inputs)
        from_pt = state_dict_model.network(real_inputs)
    diff = float((from_onnx - from_pt).abs().max())
    print(f"ONNX vs state dict, batch of {len(real_inputs)} real crops: max abs diff {diff:.3e}")
    assert from_onnx.shape == (REAL_CROPS, 128)
    assert diff < 1e-4
    assert float(from_pt.abs().max()) > 0.1  # the embeddings are not trivially small


def test_asset_record(onnx_model, onnx_path: Path) -> None:
    assert onnx_model.options["batching"] == "rewritten"  # exported with batch 1, now batches for real
    assert onnx_model.embedding_size == 128
    assert onnx_model.family == "onnx"
    c = onnx_model.contract
    assert (c.size, c.channel_order, c.alignment) == (112, "RGB", "arcface112")
    # Despite the .onnx.data file beside it, this export keeps all its weights inline: no tensor refers to
    # external data, so the digest is the .onnx file's own sha256.
    proto = onnx.load(str(onnx_path), load_external_data=False)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert onnx_model.weights_sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert not any(p.requires_grad for p in onnx_model.network.parameters())


def test_internal_modules_are_observable_and_agree_with_the_state_dict_model(
    onnx_model, state_dict_model, real_inputs: torch.Tensor
) -> None:
    """A hook on the converted graph's first ReLU6 (an ONNX Clip) sees what ``conv1.2`` of the torch model sees."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        return lambda _module, _inputs, output: seen.__setitem__(name, output.clone())

    onnx_modules = dict(onnx_model.network.named_modules())
    pt_modules = dict(state_dict_model.network.named_modules())
    handles = [
        onnx_modules["conv1/conv1/2/Clip"].register_forward_hook(keep("onnx")),
        pt_modules["conv1.2"].register_forward_hook(keep("pt")),
    ]
    few = real_inputs[:4]
    try:
        with torch.inference_mode():
            onnx_model.network(few)
            state_dict_model.network(few)
    finally:
        for h in handles:
            h.remove()
    assert seen["onnx"].shape == (4, 64, 56, 56)
    torch.testing.assert_close(seen["onnx"], seen["pt"], atol=1e-4, rtol=1e-4)


@pytest.mark.usefixtures("onnx_model")  # an ONNX model was loaded (and the shim removed) before this test
def test_torchvision_shim_is_temporary_and_its_functions_fail_clearly() -> None:
    assert importlib.util.find_spec("torchvision") is None  # this project never installs torchvision
    onnx2torch = import_onnx2torch()
    assert "torchvision" not in sys.modules and "torchvision.ops" not in sys.modules
    from onnx2torch.node_converters import roialign

    with pytest.raises(RuntimeError, match="torchvision is not installed"):
        roialign.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (2, 2))
    assert callable(onnx2torch.convert)


# ---------------------------------------------------------------------------------------------------- tiny graphs


def save_graph(path: Path, nodes: list, x_shape: list, y_shape: list, initializers: list) -> Path:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reshape_graph(path: Path, batch: int | str, flat_shape: list[int]) -> tuple[Path, np.ndarray, np.ndarray]:
    """y = reshape(x, flat_shape) @ W + reshape(P, [1, 5]): one activation Reshape, one parameter Reshape."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((12, 5)).astype(np.float32)
    p = rng.standard_normal(5).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(flat_shape, np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([1, 5], np.int64), "row_shape"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(p, "p"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"], name="flatten_x"),
        helper.make_node("Reshape", ["p", "row_shape"], ["p_row"], name="row_p"),
        helper.make_node("MatMul", ["flat", "w"], ["proj"]),
        helper.make_node("Add", ["proj", "p_row"], ["y"]),
    ]
    return save_graph(path, nodes, [batch, 3, 2, 2], [batch, 5], inits), w, p


def test_make_batch_dynamic_rewrites_only_activation_reshapes(tmp_path: Path) -> None:
    path, _, _ = reshape_graph(tmp_path / "fixed.onnx", 1, [1, -1])
    model = onnx.load(str(path))
    changes = make_batch_dynamic(model, 1)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    values = {t.name: numpy_helper.to_array(t).tolist() for t in model.graph.initializer}
    shapes = {n.name: values[n.input[1]] for n in model.graph.node if n.op_type == "Reshape"}
    assert shapes == {"flatten_x": [0, -1], "row_p": [1, 5]}
    assert len(changes) == 3  # input, output, one Reshape


@pytest.mark.parametrize(
    ("batch", "flat_shape", "mode"),
    [
        (1, [1, -1], "rewritten"),  # fixed-batch export: the Reshape gets [0, -1]
        ("N", [-1, 12], "dynamic"),  # a proper dynamic export
        ("N", [1, -1], "per_image"),  # declares a symbolic batch but hard-codes 1: caught by the probe
    ],
)
def test_tiny_reshape_graph_batches(
    tmp_path: Path, batch: int | str, flat_shape: list[int], mode: str
) -> None:
    path, w, p = reshape_graph(tmp_path / "m.onnx", batch, flat_shape)
    model = load_model("onnx", str(path))
    assert model.options["batching"] == mode
    assert model.embedding_size == 5 and model.contract.size == 2
    assert model.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # no external data
    x = torch.randn(4, 3, 2, 2)
    with torch.inference_mode():
        got = model.network(x).numpy()
    np.testing.assert_allclose(got, x.reshape(4, 12).numpy() @ w + p, rtol=1e-5, atol=1e-5)


def test_unfixable_fixed_batch_falls_back_to_one_image_at_a_time(tmp_path: Path) -> None:
    """Concat with a [1, 2] constant cannot take a batch of N: the loader must notice and run images singly."""
    k = np.array([[7.0, -7.0]], np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("Concat", ["flat", "k"], ["y"], axis=1),
    ]
    path = save_graph(
        tmp_path / "concat.onnx", nodes, [1, 3, 2, 2], [1, 14], [numpy_helper.from_array(k, "k")]
    )
    model = load_model("onnx", str(path))
    assert model.options["batching"] == "per_image" and model.embedding_size == 14
    x = torch.randn(3, 3, 2, 2)
    with torch.inference_mode():
        got = model.network(x).numpy()
    expected = np.concatenate([x.reshape(3, 12).numpy(), np.repeat(k, 3, axis=0)], axis=1)
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------------- errors


def test_external_data_is_loaded_hashed_and_its_absence_named(tmp_path: Path) -> None:
    path, w, p = reshape_graph(tmp_path / "inline.onnx", 1, [1, -1])
    proto = onnx.load(str(path))
    split = tmp_path / "split.onnx"
    onnx.save(proto, str(split), save_as_external_data=True, location="split.onnx.data", size_threshold=0)
    data = tmp_path / "split.onnx.data"
    model = load_model("onnx", str(split))
    x = torch.randn(3, 3, 2, 2)
    with torch.inference_mode():
        np.testing.assert_allclose(
            model.network(x).numpy(), x.reshape(3, 12).numpy() @ w + p, rtol=1e-5, atol=1e-5
        )
    lines = [f"{f.name}:{hashlib.sha256(f.read_bytes()).hexdigest()}" for f in (split, data)]
    assert model.weights_sha256 == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    data.unlink()
    with pytest.raises(ModelLoadError, match=r"external data files .*missing.*split\.onnx\.data"):
        load_model("onnx", str(split))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": "RGB"}, r"unknown option\(s\) \['colour'\]"),
        ({"size": 224}, "fixed to 112x112"),
        ({"mean": [0.5, 0.5]}, "'mean' must be three numbers"),
        ({"channel_order": "GBR"}, "channel_order must be one of"),
    ],
)
def test_bad_options_are_rejected(onnx_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model("onnx", str(onnx_path), options)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model("onnx", str(tmp_path / "absent.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ModelLoadError, match="cannot read ONNX model"):
        load_model("onnx", str(junk))
