"""Degradations: each kind changes the image in the expected direction; records replay; folders are deterministic."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from froq_ray.imaging.degrade import (
    ALL_KINDS,
    CSV_COLUMNS,
    CSV_NAME,
    DEFAULT_KINDS,
    DEFAULT_RANGES,
    Degradation,
    apply_degradation,
    degrade,
    degrade_folder,
    read_degradations_csv,
    records_of,
    sample_degradation,
)
from tests.data_factory import make_face_like_image, write_identity_tree

REPO_ROOT = Path(__file__).resolve().parents[3]
FACE = make_face_like_image(seed=5)
GRAY = np.full((112, 112, 3), 128, dtype=np.uint8)


def luminance(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def high_frequency_energy(image: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian of the luminance."""
    y = luminance(image)
    laplacian = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float((laplacian**2).mean())


def blockiness(image: np.ndarray) -> float:
    """Mean horizontal step across 8x8 JPEG block boundaries / mean step elsewhere (about 1 for natural images)."""
    steps = np.abs(np.diff(luminance(image), axis=1))
    boundary = np.arange(steps.shape[1]) % 8 == 7
    return float(steps[:, boundary].mean() / steps[:, ~boundary].mean())


def applied(kind: str, **params: float) -> np.ndarray:
    out = apply_degradation(FACE, Degradation(kind, dict(params)))
    assert out.shape == FACE.shape and out.dtype == np.uint8
    return out


# ---------------------------------------------------------------- each kind, in the expected direction


def test_blur_lowers_high_frequency_energy_more_with_larger_sigma() -> None:
    energies = [high_frequency_energy(applied("blur", sigma=s)) for s in (1.0, 2.0, 3.0)]
    assert high_frequency_energy(FACE) > 10 * energies[0]
    assert energies[0] > energies[1] > energies[2]


def test_downscale_lowers_high_frequency_energy_more_with_larger_factor() -> None:
    energies = [high_frequency_energy(applied("downscale", factor=f)) for f in (2.0, 4.0, 6.0)]
    assert high_frequency_energy(FACE) > 10 * energies[0]
    assert energies[0] > energies[1] > energies[2]
    # a constant image has nothing to lose
    np.testing.assert_array_equal(apply_degradation(GRAY, Degradation("downscale", {"factor": 3.0})), GRAY)


def test_jpeg_adds_block_artifacts_more_at_lower_quality() -> None:
    assert 0.9 < blockiness(FACE) < 1.1
    values = [blockiness(applied("jpeg", quality=q)) for q in (30, 15, 5)]
    assert 1.5 < values[0] < values[1] < values[2]


def test_noise_has_the_requested_standard_deviation_and_no_bias() -> None:
    out = apply_degradation(GRAY, Degradation("noise", {"sigma": 12.0, "seed": 3})).astype(np.float64)
    residual = out - 128.0
    assert abs(residual.std() - 12.0) < 0.5
    assert abs(residual.mean()) < 0.3
    # channels get independent noise
    assert abs(np.corrcoef(residual[..., 0].ravel(), residual[..., 1].ravel())[0, 1]) < 0.05


@pytest.mark.parametrize("stops", [-2.5, -1.0, 1.0])
def test_exposure_scales_mid_gray_by_two_to_the_stops_over_gamma(stops: float) -> None:
    out = apply_degradation(GRAY, Degradation("exposure", {"stops": stops})).astype(np.float64)
    expected = 128.0 * 2.0 ** (stops / 2.2)  # (v^2.2 * 2^s)^(1/2.2) = v * 2^(s/2.2)
    assert np.abs(out - expected).max() <= 1.0


def test_exposure_shifts_the_mean_and_saturates_highlights() -> None:
    brighter, darker = applied("exposure", stops=2.0), applied("exposure", stops=-2.0)
    assert brighter.mean() > FACE.mean() + 40 and darker.mean() < FACE.mean() - 30
    assert (FACE == 255).mean() == 0 and (brighter == 255).mean() > 0.1


def test_occlusion_fills_exactly_its_rectangle() -> None:
    params = {"x": 10, "y": 20, "w": 30, "h": 40, "fill": 7}
    out = applied("occlusion", **params)
    mask = np.zeros(FACE.shape[:2], dtype=bool)
    mask[20:60, 10:40] = True
    assert (out[mask] == 7).all()
    np.testing.assert_array_equal(out[~mask], FACE[~mask])


def test_sampled_occlusion_area_is_in_range_and_inside_the_image() -> None:
    rng = np.random.default_rng(0)
    lo, hi = DEFAULT_RANGES["occlusion"]
    for _ in range(200):
        p = sample_degradation("occlusion", rng, (112, 96)).params
        assert p["x"] >= 0 and p["x"] + p["w"] <= 96 and p["y"] >= 0 and p["y"] + p["h"] <= 112
        assert lo * 0.9 <= p["w"] * p["h"] / (112 * 96) <= hi * 1.1


# ---------------------------------------------------------------- sampling, records, determinism


@pytest.mark.parametrize("kind", ["downscale", "blur", "jpeg", "noise"])
def test_sampled_parameters_stay_in_their_range(kind: str) -> None:
    rng = np.random.default_rng(1)
    lo, hi = DEFAULT_RANGES[kind]
    name = {"downscale": "factor", "blur": "sigma", "jpeg": "quality", "noise": "sigma"}[kind]
    values = [sample_degradation(kind, rng, (112, 112)).params[name] for _ in range(300)]
    assert lo <= min(values) and max(values) <= hi
    assert max(values) - min(values) > 0.8 * (hi - lo)  # the whole range is used


def test_exposure_draws_both_directions_within_range() -> None:
    rng = np.random.default_rng(2)
    lo, hi = DEFAULT_RANGES["exposure"]
    stops = np.array([sample_degradation("exposure", rng, (112, 112)).params["stops"] for _ in range(300)])
    assert (stops > 0).sum() > 100 and (stops < 0).sum() > 100
    assert lo <= np.abs(stops).min() and np.abs(stops).max() <= hi


def test_ranges_can_be_overridden() -> None:
    rng = np.random.default_rng(0)
    record = sample_degradation("blur", rng, (112, 112), ranges={"blur": (2.5, 2.5)})
    assert record.params == {"sigma": 2.5}
    with pytest.raises(ValueError, match="low <= high"):
        sample_degradation("blur", rng, (112, 112), ranges={"blur": (3.0, 1.0)})


def test_default_kinds_exclude_occlusion_and_are_all_drawn() -> None:
    assert set(DEFAULT_KINDS) == {"downscale", "blur", "jpeg", "noise", "exposure"}
    assert set(ALL_KINDS) == set(DEFAULT_KINDS) | {"occlusion"}
    rng = np.random.default_rng(3)
    drawn = Counter(degrade(FACE[:16, :16], rng)[1][0].kind for _ in range(200))
    assert set(drawn) == set(DEFAULT_KINDS)


def test_degrade_is_deterministic_and_replayable() -> None:
    out_a, records_a = degrade(FACE, np.random.default_rng(42), count=3)
    out_b, records_b = degrade(FACE, np.random.default_rng(42), count=3)
    np.testing.assert_array_equal(out_a, out_b)
    assert records_a == records_b
    assert len({r.kind for r in records_a}) == 3
    replay = FACE
    for record in records_a:
        replay = apply_degradation(replay, record)
    np.testing.assert_array_equal(replay, out_a)
    others = [degrade(FACE, np.random.default_rng(seed), count=3)[1] for seed in range(5)]
    assert any(records != records_a for records in others)


def test_degrade_does_not_modify_its_input() -> None:
    image = FACE.copy()
    for kind in ALL_KINDS:
        degrade(image, np.random.default_rng(0), kinds=[kind])
    np.testing.assert_array_equal(image, FACE)


def test_bad_arguments_raise() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(FACE, rng, kinds=["blur", "sepia"])
    with pytest.raises(ValueError, match="count"):
        degrade(FACE, rng, kinds=["blur"], count=2)
    with pytest.raises(ValueError, match="uint8"):
        apply_degradation(FACE.astype(np.float32), Degradation("blur", {"sigma": 1.0}))


# ---------------------------------------------------------------- degraded copies of a tree


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    write_identity_tree(root, identities=3, per_identity=4, size=64)
    (root / "pairs.txt").write_text("3\t300\n")
    return root


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_folder_copy_degrades_the_seeded_fraction_and_copies_the_rest(tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    summary = degrade_folder(tree, dst, seed=0, fraction=0.5)
    src_files, dst_files = all_files(tree), all_files(dst)
    assert set(dst_files) == set(src_files) | {CSV_NAME}
    assert summary.images == 12 and summary.degraded == 6 and summary.files == 13

    rows = read_degradations_csv(dst / CSV_NAME)
    assert [r.relpath for r in rows] == sorted(p for p in src_files if p.endswith(".jpg"))
    assert rows == summary.rows
    for row in rows:
        if not row.degraded:
            assert dst_files[row.relpath] == src_files[row.relpath] and row.kind == "" and row.params == ""
            continue
        assert row.kind in DEFAULT_KINDS and json.loads(row.params)[row.kind]
        with Image.open(dst / row.relpath) as written:
            assert written.format == "JPEG" and written.size == (64, 64)
        assert dst_files[row.relpath] != src_files[row.relpath]
    assert dst_files["pairs.txt"] == src_files["pairs.txt"]
    with (dst / CSV_NAME).open(newline="") as handle:
        assert tuple(next(csv.reader(handle))) == CSV_COLUMNS


def test_folder_rows_replay_to_the_written_pixels(tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    summary = degrade_folder(tree, dst, seed=1, fraction=1.0, kinds=["blur", "noise", "occlusion"], count=2)
    assert summary.degraded == 12
    for row in summary.rows:
        with Image.open(tree / row.relpath) as source:
            replay = np.asarray(source.convert("RGB"))
        for record in records_of(row):
            replay = apply_degradation(replay, record)
        with Image.open(dst / row.relpath) as written:
            pixels = np.asarray(written.convert("RGB")).astype(int)
        assert len(row.kind.split("+")) == 2
        assert np.abs(pixels - replay).mean() < 2.5  # only the quality-97 JPEG container differs


def test_folder_copy_is_byte_identical_for_the_same_seed(tree: Path, tmp_path: Path) -> None:
    first = all_files((degrade_folder(tree, tmp_path / "a", seed=7)).dst_root)
    second = all_files((degrade_folder(tree, tmp_path / "b", seed=7)).dst_root)
    other = all_files((degrade_folder(tree, tmp_path / "c", seed=8)).dst_root)
    assert first == second
    assert first[CSV_NAME] != other[CSV_NAME]


def test_folder_fraction_extremes(tree: Path, tmp_path: Path) -> None:
    assert degrade_folder(tree, tmp_path / "none", seed=0, fraction=0.0).degraded == 0
    assert all_files(tmp_path / "none").keys() - {CSV_NAME} == all_files(tree).keys()
    assert degrade_folder(tree, tmp_path / "all", seed=0, fraction=1.0).degraded == 12


def test_folder_unreadable_image_is_copied_and_reported(tree: Path, tmp_path: Path) -> None:
    broken = tree / "Identity_0" / "Identity_0_0099.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    summary = degrade_folder(tree, tmp_path / "dst", seed=0, fraction=1.0)
    (row,) = summary.errors
    assert row.relpath == "Identity_0/Identity_0_0099.jpg" and not row.degraded and row.error
    assert (tmp_path / "dst" / row.relpath).read_bytes() == broken.read_bytes()
    assert summary.degraded == 12


def test_folder_refuses_unsafe_destinations(tree: Path, tmp_path: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        degrade_folder(tree, occupied, seed=0)
    with pytest.raises(ValueError, match="inside the source"):
        degrade_folder(tree, tree / "degraded", seed=0)
    with pytest.raises(ValueError, match="fraction"):
        degrade_folder(tree, tmp_path / "new", seed=0, fraction=1.5)
    with pytest.raises(FileNotFoundError):
        degrade_folder(tmp_path / "missing", tmp_path / "new", seed=0)


def test_cli_prints_a_summary_table(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_degraded", REPO_ROOT / "benchmarks" / "make_degraded.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--src", str(tree), "--dst", str(tmp_path / "dst"), "--seed", "3", "--fraction", "0.75"]
    assert module.main(argv + ["--kinds", "blur,jpeg", "--range", "blur=2,2"]) == 0
    out = capsys.readouterr().out
    assert "degraded 9 of 12 images" in out
    assert "sigma" in out or "quality" in out
    assert json.loads(out.strip().splitlines()[-1]) == {"images": 12, "degraded": 9, "errors": 0}
    rows = read_degradations_csv(tmp_path / "dst" / CSV_NAME)
    assert {r.kind for r in rows if r.degraded} <= {"blur", "jpeg"}
    assert all(json.loads(r.params)["blur"] == {"sigma": 2.0} for r in rows if r.kind == "blur")
