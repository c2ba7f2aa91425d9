"""Observer calibration: layer utilities (Spearman vs pseudo-labels), top-n, greedy set selection.

Definitions (as in the FROQ reference, observer/initialization.py):

- utility(layer) = Spearman rank correlation between the layer's per-image output norms and the pseudo-labels.
  It is NaN (undefined) when the layer's norms are constant, contain non-finite values (e.g. fp16 overflow),
  or the layer was never called (its norms are NaN); NaN layers are excluded from the ranking.
- top layers = the ``top_n`` layers of highest utility; ties keep candidate (``named_modules``) order.
- greedy: start with the best layer; at each step add the remaining top layer that maximises
  Spearman(pseudo-labels, mean of the member layers' raw norms); record that correlation. A candidate whose
  set correlation is NaN never wins; among equal correlations the first in top-layer order wins (the
  reference's stable descending sort does the same). The greedy runs until all top layers are added.
- selected set = the greedy prefix up to the first maximum of the recorded correlations.

The target is the pseudo-label by default; a labelled target (``cr``, ``genuine``:
:mod:`froq_ray.curation.calibration_target`) is passed in the same ``pseudo_label`` observation. With
``method="linear"`` the artifact scores with a ridge-fitted linear observer (:mod:`.linear`) instead of the
greedy set; both kinds of artifact store the calibration set's quality quantiles (:mod:`.percentile`).

Driving: :func:`observe_calibration_batch` is the engine-independent unit (one unperturbed forward with
norm hooks on every candidate layer gives the norms and the reference embedding, then the pseudo-labels);
:func:`build_artifact` turns the concatenated observations into a :class:`CalibrationArtifact`;
:func:`calibrate` is a plain loop over both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..imaging.degrade import ALL_KINDS
from ..models.base import LoadedModel
from .artifact import METHODS, CalibrationArtifact, CalibrationSet, CalibrationSetDigest
from .linear import DEFAULT_FOLDS, fit_linear
from .observer import (
    NormObserver,
    as_embedding,
    autocast_context,
    autocast_dtype,
    candidate_layers,
    iter_chunks,
    network_input,
)
from .percentile import quality_quantiles
from .perturbations import PerturbationSettings, PseudoLabeler

NORMS_KEY = "layer_norms"
PSEUDO_LABEL_KEY = "pseudo_label"


# ---------------------------------------------------------------------------------------------- statistics
def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the average of the ranks they span (float64)."""
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    starts_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.concatenate((starts[1:], [a.size]))
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties), float64; NaN if undefined.

    Undefined: fewer than 2 items, any non-finite value, or a constant input.
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"spearman needs equal lengths, got {a.size} and {b.size}")
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denom == 0.0:
        return math.nan
    return float(np.clip((ra @ rb) / denom, -1.0, 1.0))


def layer_utilities(norms: Mapping[str, np.ndarray], target: np.ndarray) -> dict[str, float]:
    """Layer -> Spearman(norms, target), in the order of ``norms``; NaN where undefined."""
    return {name: spearman(values, target) for name, values in norms.items()}


def rank_layers(utilities: Mapping[str, float], top_n: int) -> list[str]:
    """The ``top_n`` layers of highest finite utility, best first; ties keep the order of ``utilities``."""
    valid = [(name, u) for name, u in utilities.items() if math.isfinite(u)]
    valid.sort(key=lambda item: -item[1])  # stable: ties keep candidate order
    return [name for name, _ in valid[:top_n]]


def set_correlation(norms: Mapping[str, np.ndarray], members: Sequence[str], target: np.ndarray) -> float:
    """Spearman(target, mean of the members' raw norms), computed in float64."""
    mean = np.mean(np.stack([np.asarray(norms[m], dtype=np.float64) for m in members]), axis=0)
    return spearman(mean, target)


@dataclass(frozen=True)
class GreedyResult:
    top_layers: list[str]
    curve: list[tuple[str, float]]  # (layer added, correlation of the set after adding it)
    selected: list[str]

    @property
    def best_rho(self) -> float:
        return self.curve[len(self.selected) - 1][1]


def _argmax_first(values: Sequence[float]) -> int:
    """Index of the first maximum, NaN counting as -inf."""
    keyed = [(-math.inf if math.isnan(v) else v) for v in values]
    return keyed.index(max(keyed))


def greedy_selection(
    norms: Mapping[str, np.ndarray],
    target: np.ndarray,
    top_n: int = 10,
    utilities: Mapping[str, float] | None = None,
) -> GreedyResult:
    """Top-n layers by utility, greedy forward selection over them, best prefix (see module doc)."""
    if utilities is None:
        utilities = layer_utilities(norms, target)
    top = rank_layers(utilities, top_n)
    if not top:
        raise ValueError("no layer has a defined utility (all norms constant, non-finite or missing)")
    members = [top[0]]
    curve = [(top[0], set_correlation(norms, members, target))]
    remaining = top[1:]
    while remaining:
        scores = [set_correlation(norms, members + [c], target) for c in remaining]
        best = _argmax_first(scores)
        members.append(remaining.pop(best))
        curve.append((members[-1], scores[best]))
    best_prefix = _argmax_first([rho for _, rho in curve]) + 1
    return GreedyResult(top_layers=top, curve=curve, selected=members[:best_prefix])


# ---------------------------------------------------------------------------------------------- observing
def observe_calibration_batch(
    model: LoadedModel,
    batch: np.ndarray | torch.Tensor,
    pseudo_labeler: PseudoLabeler,
    layer_names: Sequence[str],
    *,
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    """Norms of every layer in ``layer_names`` and the pseudo-labels for one batch.

    ``batch``: uint8 crops (N, H, W, 3) (``model.input_transform()`` is applied) or float NCHW network input.
    One unperturbed forward pass (in the labeler's precision, in chunks of ``max_forward_batch``) with norm
    hooks gives all norms and the reference embedding; the perturbed passes follow.
    Returns ``layer_norms`` (N, L) float32 in ``layer_names`` order (NaN for a layer not called) and the
    float32 (N,) arrays ``pl_flip``, ``pl_noise``, ``pl_occlusion``, ``pseudo_label``.
    """
    device = torch.device(device) if device is not None else pseudo_labeler.device
    network = model.network.to(device)
    x = network_input(batch, model.input_transform().to(device), device)
    norms = torch.full((x.shape[0], len(layer_names)), math.nan, dtype=torch.float32)
    embeddings = []
    with torch.inference_mode(), NormObserver(network, layer_names) as observer:
        for rows in iter_chunks(x.shape[0], pseudo_labeler.settings.max_forward_batch):
            with autocast_context(device, pseudo_labeler.autocast_dtype):
                embeddings.append(as_embedding(observer.forward(x[rows])))
            observed = observer.norms()
            for column, name in enumerate(layer_names):
                if name in observed:
                    norms[rows, column] = observed[name].cpu()
    result = pseudo_labeler(x, reference_embedding=torch.cat(embeddings))
    result[NORMS_KEY] = norms.numpy()
    return result


EMBEDDING_KEY = "embedding"


def observe_norms_and_embeddings(
    model: LoadedModel,
    batch: np.ndarray | torch.Tensor,
    layer_names: Sequence[str],
    device: torch.device | str = "cpu",
    *,
    precision: str = "fp32",
    max_forward_batch: int = 256,
) -> dict[str, np.ndarray]:
    """One forward pass with norm hooks on ``layer_names``: what a labelled-target calibration needs.

    ``batch``: uint8 crops (N, H, W, 3) or float NCHW network input. Returns ``layer_norms`` (N, L) float32 in
    ``layer_names`` order (NaN for a layer not called) and ``embedding`` (N, D) float32 (the network output,
    not normalised), computed in chunks of ``max_forward_batch`` under ``precision``'s autocast."""
    device = torch.device(device)
    network = model.network.to(device)
    x = network_input(batch, model.input_transform().to(device), device)
    norms = torch.full((x.shape[0], len(layer_names)), math.nan, dtype=torch.float32)
    embeddings = []
    with torch.inference_mode(), NormObserver(network, layer_names) as observer:
        for rows in iter_chunks(x.shape[0], max_forward_batch):
            with autocast_context(device, autocast_dtype(precision)):
                embeddings.append(as_embedding(observer.forward(x[rows])).float().cpu())
            observed = observer.norms()
            for column, name in enumerate(layer_names):
                if name in observed:
                    norms[rows, column] = observed[name].cpu()
    embedding = torch.cat(embeddings) if embeddings else torch.zeros(0, model.embedding_size)
    return {NORMS_KEY: norms.numpy(), EMBEDDING_KEY: embedding.numpy()}


def degraded_copies(
    crops: np.ndarray, copies: int, seed: int, kinds: Sequence[str] = ALL_KINDS
) -> tuple[np.ndarray, list[list[str]]]:
    """``copies`` seeded degraded copies of each uint8 crop (N, H, W, 3), the degradation of ``froq distill``'s
    self-training (:func:`froq_ray.imaging.degrade.degrade`, one kind per copy drawn from ``kinds``).

    Copy c of an image draws from ``image_rng(seed, "<sha256 of its pixels>#c")``: it depends on the image's
    content, the seed and c only (not on the batch, the worker or the image's path). Returns the copies
    (N * copies, H, W, 3) uint8, image-major (row ``i * copies + c``), and per image the JSON records of its
    copies' degradations."""
    from ..imaging.degrade import degrade, image_rng

    crops = np.asarray(crops)
    out = np.empty((crops.shape[0] * copies, *crops.shape[1:]), dtype=np.uint8)
    records: list[list[str]] = []
    for i, image in enumerate(crops):
        key = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
        per_image = []
        for c in range(copies):
            out[i * copies + c], applied = degrade(image, image_rng(seed, f"{key}#{c}"), kinds, 1)
            per_image.append(
                json.dumps([{"kind": r.kind, "params": r.params} for r in applied], sort_keys=True)
            )
        records.append(per_image)
    return out, records


def concat_observations(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch observation dicts along the image axis."""
    if not parts:
        raise ValueError("no calibration batches were observed")
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def probe_call_counts(
    model: LoadedModel, layer_names: Sequence[str], device: torch.device | str = "cpu"
) -> dict[str, int]:
    """How many times each layer is called in one forward pass (layers not called: 0)."""
    size = model.contract.size
    sample = torch.zeros(1, 3, size, size, device=device)
    with torch.inference_mode(), NormObserver(model.network.to(device), layer_names) as observer:
        observer.forward(sample)
        counts = observer.call_counts()
    return {name: counts.get(name, 0) for name in layer_names}


def calibration_layers(model: LoadedModel) -> tuple[list[str], dict[str, int]]:
    """The candidate layers of a calibration in network order and their call counts: every module that one
    forward pass calls (a module never called has no norm).

    This order is the column order of ``layer_norms``. The calibrate job writes the artifact JSON with sorted
    keys, so an artifact's ``candidate_layers`` come back sorted: use this list, not those keys, for columns."""
    calls = probe_call_counts(model, candidate_layers(model.network))
    layers = [name for name, n in calls.items() if n > 0]
    return layers, {name: calls[name] for name in layers}


# ---------------------------------------------------------------------------------------------- artifact
def build_artifact(
    model: LoadedModel,
    layer_names: Sequence[str],
    observations: Mapping[str, np.ndarray],
    settings: PerturbationSettings | Mapping[str, object],
    *,
    top_n: int,
    calibration_set: CalibrationSet,
    precision: str,
    layer_calls: Mapping[str, int],
    method: str = "greedy",
    groups: Sequence[object] | np.ndarray | None = None,
    linear_top_n: int | None = None,
    folds: int = DEFAULT_FOLDS,
) -> CalibrationArtifact:
    """Utilities, greedy selection (and for ``method="linear"`` the linear observer) and the artifact, from
    concatenated observations: ``layer_norms`` (N, L) in ``layer_names`` order and the target (N,) under
    ``pseudo_label``.

    ``settings``: the perturbation settings (stored as ``settings.perturbations``) or, for a labelled target,
    the mapping stored as ``settings`` itself (``top_n`` is added). ``groups``: the images'
    identities (N,), needed by ``linear`` (identity-grouped cross-validation). The artifact stores 1,001
    quantiles of the calibration images' quality under the chosen observer. ``ValueError`` for an unknown
    method, a linear fit without identities, or inputs that do not align."""
    if method not in METHODS:
        raise ValueError(f"observer method must be one of {', '.join(METHODS)}, got {method!r}")
    matrix = np.asarray(observations[NORMS_KEY])
    norms = {name: matrix[:, i] for i, name in enumerate(layer_names)}
    target = np.asarray(observations[PSEUDO_LABEL_KEY])
    utilities = layer_utilities(norms, target)
    greedy = greedy_selection(norms, target, top_n, utilities)
    linear = None
    if method == "linear":
        if groups is None:
            raise ValueError("the linear observer needs the calibration images' identities (groups)")
        linear = fit_linear(
            layer_names, matrix, target, groups, utilities=utilities, top_n=linear_top_n, folds=folds
        )
        index = [list(layer_names).index(name) for name in linear.layers]
        quality = linear.predict(matrix[:, index])
    else:
        quality = np.mean(np.stack([np.asarray(norms[m], np.float64) for m in greedy.selected]), axis=0)
    if isinstance(settings, PerturbationSettings):
        stored: dict[str, object] = {"perturbations": settings.to_dict(), "top_n": top_n}
    else:
        stored = {**dict(settings), "top_n": top_n}
    return CalibrationArtifact(
        model=model.identity(),
        utilities=utilities,
        layer_calls=dict(layer_calls),
        top_layers=greedy.top_layers,
        greedy_curve=greedy.curve,
        selected_layers=greedy.selected,
        settings=stored,
        calibration_set=calibration_set,
        precision=precision,
        method=method,
        linear=linear,
        quality_quantiles=quality_quantiles(quality).tolist(),
    )


def calibrate(
    model: LoadedModel,
    batches: Iterable[np.ndarray],
    settings: PerturbationSettings | None = None,
    top_n: int = 10,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    layer_names: Sequence[str] | None = None,
    image_ids: Iterable[str] | None = None,
) -> CalibrationArtifact:
    """Plain-loop calibration over batches of uint8 crops (N, H, W, 3).

    The calibration-set digest is over ``image_ids`` when given (kind ``sorted_image_ids``), else over the
    crops' pixel bytes (kind ``sorted_pixel_sha256``).
    """
    settings = settings if settings is not None else PerturbationSettings()
    device = torch.device(device)
    names = list(layer_names) if layer_names is not None else candidate_layers(model.network)
    labeler = PseudoLabeler(model.network, model.contract, settings, device, autocast_dtype(precision))
    digest = CalibrationSetDigest()
    if image_ids is not None:
        digest.add_ids(image_ids)
    parts = []
    for batch in batches:
        if image_ids is None:
            digest.add_pixels(batch)
        parts.append(observe_calibration_batch(model, batch, labeler, names, device=device))
    observations = concat_observations(parts)
    calibration_set = digest.result()
    if calibration_set.size != observations[PSEUDO_LABEL_KEY].shape[0]:
        raise ValueError(
            f"{calibration_set.size} image ids for {observations[PSEUDO_LABEL_KEY].shape[0]} calibration images"
        )
    calls = probe_call_counts(model, names, device)
    return build_artifact(
        model,
        names,
        observations,
        settings,
        top_n=top_n,
        calibration_set=calibration_set,
        precision=precision,
        layer_calls=calls,
    )
