"""Issue 15 core: ridge fit, identity-grouped CV, the linear observer in the scorer, quality percentiles,
labelled targets (cr, genuine) against brute force, and artifact versions."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from froq_ray.curation.calibration_target import (
    build_artifact_from_labels,
    genuine_similarity,
    labelled_observations,
    labelled_target,
)
from froq_ray.quality.artifact import ArtifactError, ArtifactMismatchError, CalibrationArtifact, load_artifact
from froq_ray.quality.calibration import NORMS_KEY, PSEUDO_LABEL_KEY, build_artifact, spearman
from froq_ray.quality.linear import LinearObserver, fit_linear, grouped_folds, ridge_weights
from froq_ray.quality.observer import StopPoint, network_input
from froq_ray.quality.percentile import quality_percentile, quality_quantiles
from froq_ray.quality.scorer import FroqScorer
from tests.tiny_models import flat_norms, hand_artifact, manual_activations, random_crops, tiny_fr_model

ROOT = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------------------------------------------ ridge
def test_ridge_weights_match_the_augmented_least_squares_solution():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 5))
    y = z @ np.array([1.0, -2.0, 0.0, 0.5, 3.0]) + 7.0 + 0.1 * rng.normal(size=40)
    for penalty in (0.0, 0.3, 25.0):
        w, b = ridge_weights(z, y, penalty)
        # independent: lstsq on [Zc; sqrt(penalty) I] w = [y - mean; 0]
        zc = z - z.mean(axis=0)
        a = np.vstack([zc, math.sqrt(penalty) * np.eye(5)])
        rhs = np.concatenate([y - y.mean(), np.zeros(5)])
        expected = np.linalg.lstsq(a, rhs, rcond=None)[0]
        np.testing.assert_allclose(w, expected, rtol=1e-10, atol=1e-12)
        assert b == pytest.approx(y.mean())
    with pytest.raises(ValueError, match="penalty"):
        ridge_weights(z, y, -1.0)


def test_grouped_folds_never_split_an_identity():
    rng = np.random.default_rng(1)
    groups = rng.choice([f"id{i}" for i in range(23)], size=300)
    folds = grouped_folds(groups, k=5, seed=3)
    assert set(folds.tolist()) == set(range(5))
    for k in range(5):
        assert not set(groups[folds == k]) & set(groups[folds != k])  # no identity on both sides
    counts = [len(set(groups[folds == k])) for k in range(5)]
    assert max(counts) - min(counts) <= 1
    np.testing.assert_array_equal(folds, grouped_folds(list(groups), k=5, seed=3))  # deterministic
    with pytest.raises(ValueError, match="at least 5 identities"):
        grouped_folds(["a", "b", "a"], k=5)


def synthetic(n_ids=30, per_id=4, seed=0):
    """Norms of 4 layers (one constant), a target driven by two of their log norms, identities."""
    rng = np.random.default_rng(seed)
    n = n_ids * per_id
    groups = np.repeat([f"p{i:02d}" for i in range(n_ids)], per_id)
    logs = rng.normal(size=(n, 3)) * np.array([0.5, 1.0, 2.0]) + np.array([1.0, 2.0, -1.0])
    norms = np.column_stack([np.exp(logs[:, 0]), np.full(n, 3.0), np.exp(logs[:, 1]), np.exp(logs[:, 2])])
    target = 0.8 * logs[:, 0] - 0.3 * logs[:, 2] + 0.05 * rng.normal(size=n)
    return ["a", "const", "b", "c"], norms, target, groups


def test_fit_linear_standardises_fits_and_predicts():
    layers, norms, target, groups = synthetic()
    fit = fit_linear(layers, norms, target, groups)
    assert fit.layers == ["a", "b", "c"] and fit.excluded == {"const": "constant norms"}
    logs = np.log(norms[:, [0, 2, 3]])
    np.testing.assert_allclose(fit.means, logs.mean(axis=0))
    np.testing.assert_allclose(fit.scales, logs.std(axis=0))
    w, b = ridge_weights((logs - logs.mean(axis=0)) / logs.std(axis=0), target, fit.penalty)
    np.testing.assert_allclose(fit.weights, w)
    assert fit.intercept == pytest.approx(b)
    assert fit.penalty == float(max(fit.cv, key=lambda p: (fit.cv[p], float(p))))
    assert spearman(fit.predict(norms[:, [0, 2, 3]]), target) > 0.95
    top = fit_linear(
        layers, norms, target, groups, utilities={"a": 0.9, "const": math.nan, "b": 0.1, "c": -0.5}, top_n=2
    )
    assert top.layers == ["a", "b"] and top.excluded["c"] == "not in the top-n"
    assert LinearObserver.from_dict(json.loads(json.dumps(fit.to_dict()))) == fit


# ------------------------------------------------------------------------------------------ percentiles
def test_percentiles_follow_the_stored_quantiles():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=5000)
    q = quality_quantiles(reference)
    np.testing.assert_array_equal(q, np.quantile(reference, np.linspace(0, 1, 1001)))
    x = np.concatenate([rng.normal(size=200), [q[0], q[-1], q[0] - 1, q[-1] + 1, np.nan]])
    got = quality_percentile(x, q)
    assert got.dtype == np.float32
    # strictly increasing quantiles: the percentile is numpy's linear interpolation of (Q_k, k / 10)
    np.testing.assert_allclose(got[:-1], np.interp(x[:-1], q, np.linspace(0, 100, 1001)), atol=1e-4)
    assert got[-1] != got[-1]  # NaN stays NaN
    # close to the share of the reference set scoring lower
    share = 100 * (reference[None, :] < x[:200, None]).mean(axis=1)
    assert np.abs(got[:200] - share).max() < 0.2


def test_percentile_ties_take_the_start_of_the_plateau():
    q = np.array([0.0, 1.0, 1.0, 1.0, 2.0])  # 5 quantiles: steps of 25
    got = quality_percentile(np.array([1.0, 0.5, 1.5, 2.0, 0.0]), q)
    np.testing.assert_allclose(got, [25.0, 12.5, 87.5, 100.0, 0.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        quality_percentile(np.zeros(1), np.array([1.0, 0.0]))


# ------------------------------------------------------------------------------------- labelled targets
def labelled_embeddings(seed=5):
    rng = np.random.default_rng(seed)
    ids = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 1 + ["d"] * 5, dtype=object)
    centres = {i: rng.normal(size=6) for i in "abcd"}
    return np.stack([centres[i] + 0.7 * rng.normal(size=6) for i in ids]).astype(np.float32), ids


def brute_force(x, ids, sources=None):
    """The genuine and CR targets of each row of ``x`` (N, D), recounted row by row in float64. The references
    are the rows that are their own source (all rows when ``sources`` is None); a row is compared with the
    references of its identity other than its own source, and with the other identities' reference centres."""
    sources = np.arange(len(ids)) if sources is None else sources
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    references = [j for j in range(len(ids)) if sources[j] == j]
    centre = {k: unit[[j for j in references if ids[j] == k]].sum(axis=0) for k in set(ids[references])}
    genuine, cr = [], []
    for i in range(len(ids)):
        others = [j for j in references if ids[j] == ids[i] and j != sources[i]]
        if not others:
            genuine.append(np.nan)
            cr.append(np.nan)
            continue
        genuine.append(np.mean([unit[i] @ unit[j] for j in others]))
        loo = unit[others].sum(axis=0)
        ccs = unit[i] @ loo / np.linalg.norm(loo)
        nnccs = max(unit[i] @ c / np.linalg.norm(c) for k, c in centre.items() if k != ids[i])
        cr.append(ccs / (nnccs + 1 + 1e-9))
    return np.array(genuine), np.array(cr)


def test_genuine_and_cr_targets_match_brute_force():
    x, ids = labelled_embeddings()
    genuine, cr = brute_force(x, ids)
    np.testing.assert_allclose(genuine_similarity(x, ids), genuine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(labelled_target("genuine", x, ids), genuine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(labelled_target("cr", x, ids), cr, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cr, genuine"):
        labelled_target("pseudo_label", x, ids)
    norms = np.abs(np.random.default_rng(0).normal(size=(len(ids), 2))) + 1
    observations, used = labelled_observations(norms, x, ids, "genuine")
    assert (~used).sum() == 1 and not used[7]  # the only image of "c" is left out
    np.testing.assert_allclose(observations[PSEUDO_LABEL_KEY], genuine[used], rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------- scorer + artifact
@pytest.fixture(scope="module")
def model():
    return tiny_fr_model(size=16)


def linear_artifact(model, weights):
    base = hand_artifact(model, ["stem"])
    layers = ["stem", "block.bn2", "down", "head"]
    return dataclasses.replace(
        base,
        method="linear",
        linear=LinearObserver(
            layers=layers,
            weights=list(weights),
            means=[1.0, -0.5, 0.2, 0.7],
            scales=[0.5, 2.0, 1.5, 0.8],
            intercept=0.25,
            penalty=1.0,
            folds=5,
        ),
        quality_quantiles=np.linspace(-3, 3, 11).tolist(),
    )


def test_linear_scorer_equals_the_weights_applied_to_independent_norms(model):
    artifact = linear_artifact(model, [0.4, -1.2, 0.0, 0.7])
    crops = random_crops(9, 16, seed=4)
    result = FroqScorer(model, artifact).score(crops)
    truth = manual_activations(
        model.network, network_input(crops, model.input_transform(), torch.device("cpu"))
    )
    lin = artifact.linear
    expected = lin.intercept + sum(
        w * (np.log(flat_norms(truth[name][-1]).numpy()) - m) / s
        for name, w, m, s in zip(lin.layers, lin.weights, lin.means, lin.scales, strict=True)
    )
    np.testing.assert_allclose(result.quality, expected, rtol=1e-5, atol=1e-5)
    assert artifact.scoring_layers == ["stem", "block.bn2", "head"]
    # the percentile helper of the artifact reads the stored quantiles
    np.testing.assert_allclose(artifact.percentile(np.array([0.0, -3.0, 9.0])), [50.0, 0.0, 100.0])


def test_quality_only_stops_after_the_deepest_layer_with_a_non_zero_weight(model):
    artifact = linear_artifact(model, [0.4, -1.2, 0.9, 0.0])  # head (the embedding) weighs nothing
    crops = random_crops(5, 16, seed=8)
    fast = FroqScorer(model, artifact, quality_only=True)
    assert fast.stop_at == StopPoint("down", 1)
    ran_later = []
    handle = model.network.pool.register_forward_hook(lambda *_: ran_later.append(1))
    try:
        quality = fast.score(crops).quality
    finally:
        handle.remove()
    assert ran_later == []
    np.testing.assert_allclose(quality, FroqScorer(model, artifact).score(crops).quality, rtol=1e-6)


def test_linear_artifact_round_trips_and_refuses_another_model(model, tmp_path):
    artifact = linear_artifact(model, [0.4, -1.2, 0.0, 0.7])
    path = artifact.save(tmp_path / "a.json")
    back = load_artifact(path)
    assert back.calibration_id == artifact.calibration_id and back.linear == artifact.linear
    assert back.method == "linear" and back.quality_quantiles == artifact.quality_quantiles
    assert json.loads(path.read_text())["schema_version"] == 2
    other = dataclasses.replace(model, weights_sha256="0" * 64)
    with pytest.raises(ArtifactMismatchError, match="weights_sha256"):
        FroqScorer(other, back)
    data = json.loads(path.read_text())
    data["linear"]["layers"][0] = "no.such.layer"
    with pytest.raises(ArtifactError, match="no.such.layer"):
        CalibrationArtifact.from_dict(data)
    del data["method"]
    with pytest.raises(ArtifactError, match="'method'"):
        CalibrationArtifact.from_dict(data)


@pytest.mark.parametrize(
    "path",
    [
        "docs/results/mobilefacenet-lfw-folds123.calibration.json",
        "docs/results/dlib_resnet_v1-lfw-folds234.calibration.json",  # the built-in one before issue 15
    ],
)
def test_old_artifacts_load_as_greedy_with_their_id(path):
    data = json.loads((ROOT / path).read_text())
    assert data["schema_version"] == 1 and "method" not in data
    artifact = load_artifact(ROOT / path)  # checks the stored calibration_id against the content
    assert artifact.method == "greedy" and artifact.linear is None and artifact.quality_quantiles is None
    assert artifact.scoring_layers == data["selected_layers"]
    assert json.loads(artifact.to_json()) == data  # written back byte-for-byte the same JSON
    with pytest.raises(ValueError, match="no quality quantiles"):
        artifact.percentile(np.zeros(2))


def test_shipped_dlib_calibration_is_the_linear_cr_observer_and_scores_real_faces_by_its_formula(lfw_dev_dir):
    from PIL import Image

    from froq_ray.models import load_model
    from froq_ray.pipeline.artifacts import read_artifact

    dlib = load_model("dlib_resnet_v1")
    artifact = read_artifact("builtin", dlib)  # refuses an artifact made for other weights
    assert artifact.method == "linear" and artifact.settings["target"] == "cr"
    assert artifact.settings["cr"]["images_used"] == artifact.calibration_set.size
    quantiles = np.asarray(artifact.quality_quantiles)
    assert quantiles.shape == (1001,) and (np.diff(quantiles) >= 0).all()
    paths = sorted((lfw_dev_dir / "images").glob("*/*.jpg"))[:6]
    crops = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    # independent norms: plain forward hooks on the built-in network, every weighted layer called once
    lin, net, seen = artifact.linear, dlib.network, {}
    modules = dict(net.named_modules())

    def keep(name):
        def hook(_module, _inputs, output) -> None:  # returns None: the output is left as it is
            assert name not in seen, f"{name} called twice"
            seen[name] = flat_norms(output)

        return hook

    hooks = [modules[name].register_forward_hook(keep(name)) for name in lin.layers]
    try:
        with torch.no_grad():
            net(network_input(crops, dlib.input_transform(), torch.device("cpu")))
    finally:
        for hook in hooks:
            hook.remove()
    expected = lin.intercept + sum(
        w * (np.log(seen[name].numpy()) - m) / s
        for name, w, m, s in zip(lin.layers, lin.weights, lin.means, lin.scales, strict=True)
    )
    result = FroqScorer(dlib, artifact, device="cpu").score(crops)
    np.testing.assert_allclose(result.quality, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        artifact.percentile(result.quality), quality_percentile(result.quality, quantiles), rtol=0, atol=0
    )


def test_build_artifact_linear_and_greedy_store_quantiles_of_their_own_quality(model):
    layers, norms, target, groups = synthetic(n_ids=12, per_id=3, seed=2)
    names = ["stem", "block.bn2", "down", "head"]  # real layer names of the tiny model for check_matches
    observations = {NORMS_KEY: norms.astype(np.float32), PSEUDO_LABEL_KEY: target.astype(np.float32)}
    from froq_ray.quality.artifact import CalibrationSet

    # the same names, observations, calibration set and layer calls for every artifact built here
    build = functools.partial(
        build_artifact,
        model,
        names,
        observations,
        top_n=3,
        calibration_set=CalibrationSet("0" * 64, "sorted_image_ids", len(target)),
        precision="fp32",
        layer_calls={n: 1 for n in names},
    )
    greedy = build({"target": "genuine"})
    assert greedy.method == "greedy" and greedy.settings == {"target": "genuine", "top_n": 3}
    index = [names.index(n) for n in greedy.selected_layers]
    np.testing.assert_allclose(
        greedy.quality_quantiles,
        quality_quantiles(norms[:, index].astype(np.float32).astype(np.float64).mean(axis=1)),
    )
    linear = build({"target": "genuine"}, method="linear", groups=groups)
    assert linear.method == "linear" and linear.linear.layers == ["stem", "down", "head"]
    expected = linear.linear.predict(norms[:, [0, 2, 3]].astype(np.float32))
    np.testing.assert_allclose(linear.quality_quantiles, quality_quantiles(expected))
    with pytest.raises(ValueError, match="identities"):
        build({}, method="linear")
    back = CalibrationArtifact.from_json(linear.to_json())
    assert back.calibration_id == linear.calibration_id and back.linear == linear.linear


def test_labelled_artifact_counts_what_was_left_out(model):
    x, ids = labelled_embeddings()
    names = ["stem", "block.bn2", "down", "head"]
    rng = np.random.default_rng(3)
    norms = np.exp(rng.normal(size=(len(ids), 4))).astype(np.float32)
    artifact = build_artifact_from_labels(
        model,
        names,
        norms,
        x,
        identities=ids,
        image_ids=[f"img{i}" for i in range(len(ids))],
        top_n=2,
        precision="fp32",
        layer_calls={n: 1 for n in names},
        target="genuine",
        extra_settings={"degraded_copies": 0},
    )
    assert artifact.settings == {
        "target": "genuine",
        "genuine": {
            "images_used": 12,
            "images_without_target": 1,
            "identities_used": 3,
            "degraded_copies": 0,
        },
        "top_n": 2,
    }
    assert artifact.calibration_set.size == 12


def test_degraded_copies_are_labelled_against_the_other_references():
    x, ids = labelled_embeddings()
    n = len(ids)
    rng = np.random.default_rng(7)
    copies = x[[0, 1, 5, 7, 9]] + 0.5 * rng.normal(size=(5, x.shape[1])).astype(np.float32)
    emb = np.vstack([x, copies])
    labels = np.concatenate([ids, ids[[0, 1, 5, 7, 9]]])
    sources = np.concatenate([np.arange(n), [0, 1, 5, 7, 9]])
    genuine, cr = brute_force(emb, labels, sources)  # the copies: references only, never the own source
    np.testing.assert_allclose(
        labelled_target("genuine", emb, labels, sources=sources), genuine, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(labelled_target("cr", emb, labels, sources=sources), cr, rtol=1e-5, atol=1e-6)
    # without copies, the sourced computation is the plain one
    np.testing.assert_allclose(
        labelled_target("cr", x, ids, sources=np.arange(n)),
        labelled_target("cr", x, ids),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="reference rows"):
        labelled_target("genuine", emb, labels, sources=np.concatenate([np.arange(n), [14, 1, 5, 7, 9]]))
