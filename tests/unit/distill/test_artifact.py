"""Student artifact: ONNX export + check, save/load round trip, and the errors for missing, corrupt or wrong
artifacts (each message checked)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import fsspec
import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import save_file

from froq_ray.distill.artifact import (
    CARD_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    StudentArtifactError,
    load_student_artifact,
    save_student_artifact,
)
from froq_ray.distill.cost import count_flops, count_params
from froq_ray.distill.serving import student_runner
from froq_ray.distill.students import build_student, student_contract
from froq_ray.imaging.prepare import ModelInputTransform
from tests.tiny_models import hand_artifact, tiny_fr_model
from tests.tiny_students import seeded_student

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CASES = [
    ("tiny_cnn", 64),
    ("tiny_cnn", 112),
    ("mobilefacenet_student", 64),
    ("mobilefacenet_student", 112),
    ("mobilefacenet_student", 112, "energy"),
]  # a third item: the mobilefacenet_student head


def _student(arch: str, size: int, seed: int = 0, head: str | None = None):
    network = seeded_student(arch, size, seed, head)
    # move the BatchNorm statistics away from identity so the check exercises them
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
        if isinstance(module, torch.nn.BatchNorm1d):  # the energy head's: norms are ~log(100), not ~0
            module.running_mean.uniform_(2.0, 6.0)
            module.running_var.uniform_(0.5, 1.5)
    network.set_target_scale(0.31, 0.07)
    return network


@pytest.fixture(scope="module")
def saved(tmp_path_factory, one_torch_thread):  # noqa: ARG001 - requested for its side effect: one torch thread
    """Every (arch, size) saved once: {case: (folder, network, card)}."""
    out = {}
    for case in CASES:
        arch, size = case[:2]
        folder = tmp_path_factory.mktemp("-".join(map(str, case)))
        network = _student(*case[:2], head=case[2] if len(case) > 2 else None)
        samples = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
        card = save_student_artifact(
            str(folder),
            network,
            {"teacher": {"model_id": "mobilefacenet@abc"}, "metrics": {"spearman": np.float32(0.5)}},
            check_samples=samples,
        )
        out[case] = (folder, network, card)
    return out


@pytest.fixture()
def small_artifact(saved, tmp_path) -> Path:
    """A private copy of the tiny_cnn@64 artifact, free to damage."""
    folder = tmp_path / "student"
    shutil.copytree(saved[("tiny_cnn", 64)][0], folder)
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_card(folder: Path, **changes) -> None:
    card = json.loads((folder / CARD_FILE).read_text())
    card.update(changes)
    (folder / CARD_FILE).write_text(json.dumps(card))


# ----------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_round_trip_pytorch_and_onnx(saved, case):
    folder, network, card = saved[case]
    arch, size = case[:2]
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILE, ONNX_FILE, WEIGHTS_FILE])
    assert card == json.loads((folder / CARD_FILE).read_text())
    assert card["weights"] == {"file": WEIGHTS_FILE, "sha256": _sha(folder / WEIGHTS_FILE)}
    assert card["onnx"]["sha256"] == _sha(folder / ONNX_FILE) and card["onnx"]["opset"] == 17
    assert card["onnx"]["max_abs_diff_vs_pytorch"] < 1e-4

    loaded = load_student_artifact(str(folder))
    assert loaded.student_id == f"student-{arch}@{card['weights']['sha256'][:12]}"
    assert loaded.contract == student_contract(size) and loaded.card == card
    assert not loaded.network.training and not any(p.requires_grad for p in loaded.network.parameters())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(9))
    network.eval()
    with torch.no_grad():
        expected = network(x)
        assert torch.equal(loaded.network(x), expected)
    # the ONNX file on its own, run by onnxruntime on fresh input, gives teacher-unit quality
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert [o.name for o in session.get_outputs()] == ["quality"]
    (quality,) = session.run(None, {"pixels": x.numpy()})
    assert quality.shape == (2,)
    assert np.abs(quality - expected.numpy()).max() < 1e-4


def test_card_describes_the_student(saved):
    _, network, card = saved[("mobilefacenet_student", 64)]
    assert card["format"] == "froq_ray.student" and card["schema_version"] == "1"
    assert (card["arch"], card["input_size"], card["arch_options"]) == (
        "mobilefacenet_student",
        64,
        {"head_hidden": 8},
    )
    assert card["input_contract"] == {
        **student_contract(64).to_dict(),
        "source_size": 112,
        "input": "uint8 RGB ArcFace-aligned crops",
    }
    assert card["output"] == {"name": "quality", "direction": "higher_is_better", "units": "teacher"}
    assert card["params"] == count_params(network) and card["flops"] == count_flops(network, 64)
    assert card["flops"] < saved[("mobilefacenet_student", 112)][2]["flops"]
    # the caller's fields are kept, made strict-JSON (numpy scalar -> float)
    assert card["teacher"] == {"model_id": "mobilefacenet@abc"} and card["metrics"]["spearman"] == 0.5


def test_input_transform_takes_112_crops(saved):
    loaded = load_student_artifact(str(saved[("tiny_cnn", 64)][0] / CARD_FILE))  # the card path works too
    crops = torch.randint(0, 256, (3, 112, 112, 3), dtype=torch.uint8)
    x = loaded.input_transform()(crops)
    assert x.shape == (3, 3, 64, 64)
    assert loaded.network(x).shape == (3,)


def test_init_weights_is_not_needed_to_load(saved, tmp_path):
    folder = tmp_path / "mfn"
    shutil.copytree(saved[("mobilefacenet_student", 64)][0], folder)
    _edit_card(folder, arch_options={"head_hidden": 8, "init_weights": "/nowhere/mobilefacenet.pt"})
    loaded = load_student_artifact(str(folder))
    assert loaded.network.options["init_weights"] == "/nowhere/mobilefacenet.pt"


def test_remote_round_trip_through_fsspec(saved):
    network = saved[("tiny_cnn", 64)][1]
    uri = f"memory://students/{uuid.uuid4().hex}"
    try:
        card = save_student_artifact(uri, network, {"run": "remote"})
        loaded = load_student_artifact(uri)
        assert loaded.card == card and loaded.uri == uri
        assert loaded.weights_sha256 == card["weights"]["sha256"]
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(loaded.network(x), network.eval()(x))
    finally:
        fsspec.filesystem("memory").rm(uri, recursive=True)


def test_failed_onnx_check_leaves_no_card(saved, tmp_path):
    folder = tmp_path / "student"
    shutil.copytree(saved[("tiny_cnn", 64)][0], folder)  # overwriting an existing artifact
    with pytest.raises(StudentArtifactError, match=r"ONNX export of student 'tiny_cnn' differs from PyTorch"):
        save_student_artifact(str(folder), saved[("tiny_cnn", 64)][1], {}, tolerance=-1.0)
    assert not (folder / CARD_FILE).exists()
    with pytest.raises(StudentArtifactError, match=r"not a complete student artifact: no card\.json"):
        load_student_artifact(str(folder))


# ---------------------------------------------------------------------------------------------- errors
def test_truncated_weights_are_reported_as_corrupt(small_artifact):
    weights = small_artifact / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(
        StudentArtifactError, match=r"weights\.safetensors: sha256 .* the weights are corrupt or replaced"
    ):
        load_student_artifact(str(small_artifact))
    _edit_card(small_artifact, weights={"file": WEIGHTS_FILE, "sha256": _sha(weights)})
    with pytest.raises(
        StudentArtifactError, match=r"weights\.safetensors: cannot read the safetensors weights"
    ):
        load_student_artifact(str(small_artifact))


def test_edited_weights_fail_the_sha256_check(small_artifact):
    weights = small_artifact / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(StudentArtifactError, match="corrupt or replaced"):
        load_student_artifact(str(small_artifact))


def test_weights_of_another_network_do_not_fit(small_artifact):
    weights = small_artifact / WEIGHTS_FILE
    other = build_student("tiny_cnn", 64, {"width": 8})
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))
    _edit_card(small_artifact, weights={"file": WEIGHTS_FILE, "sha256": _sha(weights)})
    with pytest.raises(
        StudentArtifactError, match=r"checkpoint does not fit student 'tiny_cnn'.*shape mismatches"
    ):
        load_student_artifact(str(small_artifact))


def test_card_with_unknown_arch(small_artifact):
    _edit_card(small_artifact, arch="resnet9000")
    with pytest.raises(
        StudentArtifactError,
        match=r"card\.json: cannot rebuild the student: unknown student arch "
        r"'resnet9000'; allowed: \['tiny_cnn', 'mobilefacenet_student'\]",
    ):
        load_student_artifact(str(small_artifact))


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"schema_version": "2"},
            r"unsupported student card schema_version '2' \(this version of froq_ray reads '1'\)",
        ),
        ({"format": "something.else"}, r"not a student artifact card: format is 'something\.else'"),
        (
            {"input_contract": {**student_contract(64).to_dict(), "mean": [0.5, 0.5, 0.5]}},
            r"input_contract .* is not the contract of a 'tiny_cnn' student at input_size 64",
        ),
        ({"weights": {"file": "../elsewhere.safetensors", "sha256": "0" * 64}}, "must be a plain name"),
        (
            {"weights": {"file": "gone.safetensors", "sha256": "0" * 64}},
            r"weights file .*gone\.safetensors is missing",
        ),
        ({"input_size": 8}, "cannot rebuild the student: .*unsupported input_size 8"),
    ],
)
def test_card_field_errors(small_artifact, changes, message):
    _edit_card(small_artifact, **changes)
    with pytest.raises(StudentArtifactError, match=message):
        load_student_artifact(str(small_artifact))


def test_card_missing_fields_or_not_json(small_artifact):
    card = json.loads((small_artifact / CARD_FILE).read_text())
    del card["weights"], card["output"]
    (small_artifact / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(StudentArtifactError, match=r"card\.json: student card lacks output, weights"):
        load_student_artifact(str(small_artifact))
    (small_artifact / CARD_FILE).write_text('{"format": "froq_ray.student", ')
    with pytest.raises(StudentArtifactError, match=r"card\.json: the student card is not valid JSON"):
        load_student_artifact(str(small_artifact))


def test_missing_card_missing_folder_and_not_a_folder(small_artifact, tmp_path):
    (small_artifact / CARD_FILE).unlink()
    with pytest.raises(
        StudentArtifactError, match=r"is not a complete student artifact: no card\.json in it"
    ):
        load_student_artifact(str(small_artifact))
    with pytest.raises(StudentArtifactError, match=r"student artifact not found: .*/nope"):
        load_student_artifact(str(tmp_path / "nope"))
    with pytest.raises(
        StudentArtifactError, match=r"weights\.safetensors is a file, not a student artifact folder"
    ):
        load_student_artifact(str(small_artifact / WEIGHTS_FILE))


def test_a_calibration_artifact_is_not_a_student(tmp_path):
    path = hand_artifact(tiny_fr_model(size=16), ["block.act"]).save(tmp_path / "calibration.json")
    with pytest.raises(
        StudentArtifactError,
        match=r"calibration\.json: not a student artifact card: format is None, "
        r"expected 'froq_ray\.student' \(this is a FROQ calibration artifact\)",
    ):
        load_student_artifact(str(path))


@pytest.mark.parametrize("case", [("tiny_cnn", 64), ("mobilefacenet_student", 112, "energy")], ids=str)
def test_served_students_run_channels_last_with_the_nchw_result(saved, case):
    _, network, _ = saved[case]
    crops = np.random.default_rng(3).integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    transform = ModelInputTransform(network.contract)
    nchw = student_runner(copy.deepcopy(network), transform, "cpu", 2, memory_format="contiguous")(crops)[
        "quality"
    ]
    served = copy.deepcopy(network)
    auto = student_runner(served, transform, "cpu", 2, memory_format="auto")(crops)["quality"]
    conv = next(p for p in served.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)  # auto kept channels_last: it matched
    assert auto.dtype == np.float32 and auto.shape == (3,)
    np.testing.assert_allclose(auto, nchw, rtol=1e-5, atol=1e-5)
