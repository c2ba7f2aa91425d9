"""The auxiliary FIQA of FROQ: perturbation pseudo-labels (flip, Gaussian noise, grid occlusion).

Each component is the cosine similarity between the embedding of the unperturbed network input and the
embedding of a perturbed copy; noise and occlusion average over their copies. The pseudo-label is the mean
of the enabled components (all three by default, as in the reference).

All perturbations are applied in the network's normalised input space (after ``ModelInputTransform``), in
float32, whatever precision the network then runs in:

- flip: the input mirrored left-right (last axis).
- noise: ``K`` masks ``n_k ~ N(0, 1)`` of the input's (C, H, W) shape, drawn once per input shape from a
  ``torch.Generator`` seeded with ``noise_seed`` on the CPU (so they are identical on every device) and
  shared by all images; for every alpha, ``x' = (1 - alpha) * x + alpha * n_k``.
- occlusion: a grid of ``(H // mpx) * (W // mpx)`` non-overlapping ``mpx`` x ``mpx`` cells; each copy sets
  one cell, all channels, to the contract's minimum input value (the network value of a black pixel, per
  channel: -1 for mean = std = 0.5). When H or W is not a multiple of ``mpx`` the grid is centred and the
  leftover border (``H % mpx`` rows, ``W % mpx`` columns, the odd pixel going to the bottom/right) is
  never occluded; e.g. 150 px with mpx = 14 gives 10 x 10 cells covering pixels 5..144. For multiples
  (112 / 14 = 8 x 8 = 64 cells) this is exactly the reference's grid.

Execution: the perturbed copies of a batch form one virtual tensor of N * P rows (P copies per image,
image-major). It is materialised and pushed through the network in chunks of at most ``max_forward_batch``
rows, so one forward pass carries the copies of many images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..imaging.contract import InputContract
from ..models.inference import autocast_context, precision_name
from .observer import as_embedding, iter_chunks

COMPONENTS = ("pl_flip", "pl_noise", "pl_occlusion")


def setting_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for the :class:`PerturbationSettings` field ``name`` (None when it is): the one
    definition of the allowed values, which the ``scoring.perturbation`` config section applies too.
    ``noise_masks`` and ``occlusion_cell`` are integers >= 0 (0 turns the component off), ``max_forward_batch``
    an integer >= 1, every ``noise_alphas`` value a number in (0, 1) (an empty list turns noise off),
    ``flip`` true or false."""
    if name == "flip":
        return None if isinstance(value, bool) else f"must be true or false (got {value!r})"
    if name == "noise_alphas":
        bad = [a for a in value if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1]
        return f"every alpha must be a number in (0, 1) (got {bad[0]!r})" if bad else None
    low = {"noise_masks": 0, "occlusion_cell": 0, "max_forward_batch": 1}.get(name)
    if low is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer (got {value!r})"
    return None if value >= low else f"must be >= {low} (got {value!r})"


NO_COMPONENT = (
    "at least one pseudo-label component must be enabled (flip, noise_masks > 0, occlusion_cell > 0)"
)


@dataclass(frozen=True)
class PerturbationSettings:
    """Pseudo-label settings. ``noise_masks=0`` or no alphas disables noise; ``occlusion_cell=0`` occlusion.

    The allowed values are :func:`setting_problem`'s; ``ValueError`` (``"<field>: <why>"``) for another value
    and for settings that enable no component."""

    flip: bool = True
    noise_masks: int = 10
    noise_alphas: tuple[float, ...] = (1e-3,)
    noise_seed: int = 0
    occlusion_cell: int = 14
    max_forward_batch: int = 1024

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            problem = setting_problem(name, getattr(self, name))
            if problem is not None:
                raise ValueError(f"{name}: {problem}")
        object.__setattr__(self, "noise_alphas", tuple(float(a) for a in self.noise_alphas))
        if not (self.flip or self.noise_enabled or self.occlusion_enabled):
            raise ValueError(NO_COMPONENT)

    @property
    def noise_enabled(self) -> bool:
        return self.noise_masks > 0 and len(self.noise_alphas) > 0

    @property
    def occlusion_enabled(self) -> bool:
        return self.occlusion_cell > 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["noise_alphas"] = list(self.noise_alphas)
        return out

    @classmethod
    def from_config(cls, section: Any, **overrides: Any) -> PerturbationSettings:
        """The settings of a ``scoring.perturbation`` / ``self_training.perturbation`` config section (anything
        with pydantic's ``model_dump()``; the core does not import the config), ``overrides`` (e.g.
        ``max_forward_batch``) on top. Raises what :meth:`from_dict` raises."""
        return cls.from_dict({**section.model_dump(), **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerturbationSettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown perturbation settings: {', '.join(unknown)}")
        return cls(**{**data, "noise_alphas": tuple(data.get("noise_alphas", (1e-3,)))})


def occlusion_masks(height: int, width: int, cell: int) -> torch.Tensor:
    """(cells, 1, H, W) bool masks, one grid cell each, row-major; the grid is centred (see module doc)."""
    rows, cols = height // cell, width // cell
    if rows == 0 or cols == 0:
        raise ValueError(f"occlusion cell {cell} px is larger than the {height}x{width} input")
    top, left = (height - rows * cell) // 2, (width - cols * cell) // 2
    masks = torch.zeros(rows * cols, 1, height, width, dtype=torch.bool)
    for r in range(rows):
        for c in range(cols):
            y, x = top + r * cell, left + c * cell
            masks[r * cols + c, 0, y : y + cell, x : x + cell] = True
    return masks


def noise_masks(shape: tuple[int, int, int], count: int, seed: int) -> torch.Tensor:
    """(count, C, H, W) standard-normal float32 masks from a CPU generator seeded with ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn((count, *shape), generator=generator, dtype=torch.float32)


@dataclass
class _Layout:
    """Where each component's copies sit among the P copies of one image."""

    flip: slice | None = None
    noise: slice | None = None
    occlusion: slice | None = None
    per_image: int = 0


class PseudoLabeler:
    """Computes the pseudo-label components for batches of float32 NCHW network input.

    ``autocast_dtype`` (None = fp32, or torch.bfloat16 / torch.float16) is the precision the network runs
    in; perturbed inputs are always built in float32 and similarities are computed in float32.
    """

    def __init__(
        self,
        network: nn.Module,
        contract: InputContract,
        settings: PerturbationSettings | None = None,
        device: torch.device | str = "cpu",
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device)
        self.contract = contract
        self.settings = settings if settings is not None else PerturbationSettings()
        self.autocast_dtype = autocast_dtype
        self.precision = precision_name(autocast_dtype)
        self._min_value = contract.min_value().view(1, 1, -1, 1, 1).to(self.device)
        self._alphas = torch.tensor(self.settings.noise_alphas, dtype=torch.float32, device=self.device)
        self._cache: dict[tuple[int, int, int], tuple[torch.Tensor | None, torch.Tensor | None, _Layout]] = {}

    # -------------------------------------------------------------------------------------------- setup
    def _prepared(
        self, shape: tuple[int, int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, _Layout]:
        """Noise masks, occlusion masks and copy layout for one input shape (built once, cached)."""
        if shape not in self._cache:
            s = self.settings
            layout, offset = _Layout(), 0
            if s.flip:
                layout.flip, offset = slice(offset, offset + 1), offset + 1
            noise = None
            if s.noise_enabled:
                noise = noise_masks(shape, s.noise_masks, s.noise_seed).to(self.device)
                n = s.noise_masks * len(s.noise_alphas)
                layout.noise, offset = slice(offset, offset + n), offset + n
            occl = None
            if s.occlusion_enabled:
                occl = occlusion_masks(shape[1], shape[2], s.occlusion_cell).to(self.device)
                layout.occlusion, offset = slice(offset, offset + occl.shape[0]), offset + occl.shape[0]
            layout.per_image = offset
            self._cache[shape] = (noise, occl, layout)
        return self._cache[shape]

    def copies_per_image(self, shape: tuple[int, int, int]) -> int:
        """P: perturbed copies (= extra forward rows) per image of this (C, H, W) shape."""
        return self._prepared(shape)[2].per_image

    # ------------------------------------------------------------------------------------- perturbation
    def perturb(self, images: torch.Tensor) -> torch.Tensor:
        """(G, C, H, W) float32 -> (G, P, C, H, W) float32 perturbed copies, in layout order."""
        noise, occl, layout = self._prepared(_chw(images))
        x = images.to(torch.float32)
        parts = []
        if layout.flip is not None:
            parts.append(x.flip(-1).unsqueeze(1))
        if noise is not None:
            alpha = self._alphas.view(1, -1, 1, 1, 1, 1)
            mixed = (1.0 - alpha) * x[:, None, None] + alpha * noise[None, None]  # (G, A, K, C, H, W)
            parts.append(mixed.reshape(x.shape[0], -1, *x.shape[1:]))
        if occl is not None:
            parts.append(torch.where(occl.unsqueeze(0), self._min_value, x.unsqueeze(1)))
        return torch.cat(parts, dim=1)

    def _rows(self, x: torch.Tensor, rows: slice, per_image: int) -> torch.Tensor:
        """Rows ``rows`` of the virtual (N * P, C, H, W) tensor of all copies, built for those images only."""
        first, last = rows.start // per_image, (rows.stop - 1) // per_image
        block = self.perturb(x[first : last + 1]).reshape(-1, *x.shape[1:])
        offset = first * per_image
        return block[rows.start - offset : rows.stop - offset]

    # ---------------------------------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_context(self.device, self.autocast_dtype):
            return as_embedding(self.network(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unperturbed (N, D) float32 embeddings, in chunks of ``max_forward_batch``."""
        x = x.to(self.device, torch.float32)
        with torch.inference_mode():
            return torch.cat(
                [self._embed(x[c]) for c in iter_chunks(x.shape[0], self.settings.max_forward_batch)]
            )

    def similarities(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(N, P) cosine similarities between each image's reference embedding and its P copies."""
        n, per_image = x.shape[0], self.copies_per_image(_chw(x))
        owner = torch.arange(n, device=self.device).repeat_interleave(per_image)
        with torch.inference_mode():
            sims = torch.empty(n * per_image, dtype=torch.float32, device=self.device)
            for rows in iter_chunks(n * per_image, self.settings.max_forward_batch):
                emb = self._embed(self._rows(x, rows, per_image))
                sims[rows] = F.cosine_similarity(emb, reference[owner[rows]], dim=1)
        return sims.view(n, per_image)

    def __call__(
        self, x: torch.Tensor, reference_embedding: torch.Tensor | None = None
    ) -> dict[str, np.ndarray]:
        """Pseudo-label components and their mean for float NCHW network input ``x``.

        ``reference_embedding`` (N, D): the unperturbed embeddings if already computed (e.g. by the
        observation pass); otherwise they are computed here in the same precision as the copies.
        Returns float32 arrays of shape (N,) for the enabled components and ``pseudo_label``.
        """
        if x.dim() != 4:
            raise ValueError(f"expected float network input (N, C, H, W), got {tuple(x.shape)}")
        x = x.to(self.device, torch.float32)
        if reference_embedding is None:
            reference = self.embed(x)
        else:
            reference = (
                torch.as_tensor(reference_embedding).to(self.device, torch.float32).reshape(x.shape[0], -1)
            )
        sims = self.similarities(x, reference)
        _, _, layout = self._prepared(_chw(x))
        components = {
            name: sims[:, part].mean(dim=1)
            for name, part in zip(COMPONENTS, (layout.flip, layout.noise, layout.occlusion), strict=True)
            if part is not None
        }
        result = {name: value.cpu().numpy().astype(np.float32) for name, value in components.items()}
        result["pseudo_label"] = (
            torch.stack(list(components.values())).mean(dim=0).cpu().numpy().astype(np.float32)
        )
        return result


def _chw(images: torch.Tensor) -> tuple[int, int, int]:
    """``(C, H, W)`` of an (N, C, H, W) batch; raises ``ValueError`` for another rank."""
    if images.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(images.shape)}")
    _, c, h, w = images.shape
    return (c, h, w)
