"""Class-centre classifiability of labelled embeddings: CCS, NNCCS, CR (the quantity CR-FIQA learns).

For an image with unit embedding x of identity c (sums S_k and counts n_k from :mod:`.centres`):

- **CCS** (class-centre similarity) = cos(x, leave-one-out centre of c) = cos(x, S_c - x) for every identity
  with n_c >= 2. Leaving the image out removes the self-similarity bias (an image always resembles a centre
  it is part of, by about 1/n_c, which would favour small identities). Computed in float64 from two numbers:
  cos = (x.S_c - 1) / sqrt(|S_c|^2 - 2 x.S_c + 1), using |x| = 1 (and x.S_c = |S_c| cos(x, S_c)).
  n_c == 1: there is no other image to form a centre, CCS is NaN with note ``singleton_identity``;
  the other images sum to the zero vector (|S_c - x| = 0): NaN with note ``zero_leave_one_out_centre``.
- **NNCCS** (nearest negative class-centre similarity) = max over identities k != c of cos(x, S_k/|S_k|), with
  ``nearest`` = that k. Blocked matrix products on the index's device: image rows in blocks of ``block_rows``,
  centres in blocks of ``block_centres``, own column masked, running top-1; ties go to the lowest centre index
  (identities are sorted by name). Other centres are full centres (x is not part of them). Only one identity
  in the data: NaN, note ``no_other_identity``.
- **CR** (certainty ratio) = CCS / (NNCCS + 1 + eps), eps = 1e-9 as in CR-FIQA; NaN when either part is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .centres import CentreSums, CentreTable, l2_normalise

DEFAULT_EPS = 1e-9
NOTE_SINGLETON = "singleton_identity"
NOTE_ZERO_LOO_CENTRE = "zero_leave_one_out_centre"
NOTE_NO_OTHER_IDENTITY = "no_other_identity"
NOTE_UNKNOWN_IDENTITY = "identity_not_in_centres"


def certainty_ratio(ccs: np.ndarray, nnccs: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """CR = CCS / (NNCCS + 1 + eps), float32; NaN propagates."""
    ccs64, nn64 = np.asarray(ccs, dtype=np.float64), np.asarray(nnccs, dtype=np.float64)
    return (ccs64 / (nn64 + 1.0 + eps)).astype(np.float32)


def leave_one_out_ccs(
    unit: np.ndarray, own: np.ndarray, centres: CentreTable
) -> tuple[np.ndarray, np.ndarray]:
    """(ccs float32, note object array) for unit embeddings ``unit`` (N, D) whose identity rows are ``own``
    (-1: identity not in ``centres``). Notes are None where CCS is defined. x.S_c = |S_c| (x.dir_c), the dot
    product accumulated in float64."""
    own = np.asarray(own, dtype=np.int64)
    known = own >= 0
    safe = np.where(known, own, 0)
    norm = centres.norms[safe]
    dot = norm * np.einsum("nd,nd->n", unit.astype(np.float64), centres.directions[safe].astype(np.float64))
    squared = norm * norm - 2.0 * dot + 1.0
    n = np.where(known, centres.counts[safe], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ccs = (dot - 1.0) / np.sqrt(np.maximum(squared, 0.0))
    zero = squared <= 1e-12
    notes = np.full(unit.shape[0], None, dtype=object)
    notes[zero] = NOTE_ZERO_LOO_CENTRE
    notes[n == 1] = NOTE_SINGLETON
    notes[~known] = NOTE_UNKNOWN_IDENTITY
    ccs[(n < 2) | zero] = np.nan
    return ccs.astype(np.float32), notes


def nearest_other_centre(
    unit: np.ndarray | torch.Tensor,
    own: np.ndarray,
    centres: torch.Tensor,
    block_rows: int = 4096,
    *,
    block_centres: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """(nnccs float32, nearest int64) per row: the best cosine to a centre other than row ``own[i]``.

    ``centres``: unit centre directions (K, D) already on the device and in the dtype to compute in (float32;
    fp16/bf16 on GPUs). Memory per step: one ``block_rows x block_centres`` similarity tile. Rows with no
    other centre get NaN and -1.
    """
    if block_rows < 1 or block_centres < 1:
        raise ValueError("block_rows and block_centres must be >= 1")
    x_all = torch.as_tensor(unit)
    own_all = torch.as_tensor(np.asarray(own, dtype=np.int64))
    n, k = x_all.shape[0], centres.shape[0]
    best = np.full(n, np.nan, dtype=np.float32)
    nearest = np.full(n, -1, dtype=np.int64)
    for r0 in range(0, n, block_rows):
        x = x_all[r0 : r0 + block_rows].to(centres.device, centres.dtype)
        own_block = own_all[r0 : r0 + block_rows].to(centres.device)
        run_value = torch.full((x.shape[0],), -torch.inf, dtype=torch.float32, device=centres.device)
        run_index = torch.full((x.shape[0],), -1, dtype=torch.int64, device=centres.device)
        for c0 in range(0, k, block_centres):
            tile = x @ centres[c0 : c0 + block_centres].T
            local = own_block - c0
            inside = torch.nonzero((local >= 0) & (local < tile.shape[1])).squeeze(1)
            tile[inside, local[inside]] = -torch.inf
            value, index = tile.max(dim=1)
            value = value.float()
            better = value > run_value  # strict: ties keep the earlier (lower-index) centre
            run_value = torch.where(better, value, run_value)
            run_index = torch.where(better, index + c0, run_index)
        found = torch.isfinite(run_value)
        stop = r0 + x.shape[0]
        best[r0:stop] = torch.where(found, run_value, torch.nan).cpu().numpy()
        nearest[r0:stop] = torch.where(found, run_index, -1).cpu().numpy()
    return best, nearest


@dataclass
class ChunkScores:
    """Classifiability of one chunk of images (arrays aligned with the chunk's rows)."""

    ccs: np.ndarray
    nnccs: np.ndarray
    cr: np.ndarray
    nearest: np.ndarray
    """Row of the nearest other centre in the index's identities (-1: none)."""
    nearest_identity: np.ndarray
    identity_images: np.ndarray
    """Images of the row's own identity in the whole data (0 if unknown)."""
    note: np.ndarray
    """Why CCS/NNCCS/CR is NaN (None where all are defined)."""


class CentreIndex:
    """Centres broadcast to one device, scoring chunks of (embeddings, identities): what a GPU actor holds.

    ``dtype``: the similarity dtype for NNCCS (float32 default; torch.float16 / bfloat16 halve the centre
    matrix on GPUs). ``block_rows`` x ``block_centres``: the similarity tile of :func:`nearest_other_centre`
    (a block size below 1 raises ValueError when scoring). ``eps``: that of :func:`certainty_ratio`. CCS is
    computed on the host in float64 from the float32 directions and the sum norms.
    Memory: the :class:`CentreTable` (K x D float32 + 2 K numbers) on the host, plus the centre matrix on the
    device in ``dtype`` (on cpu in float32 it is the same array, not a copy).
    """

    def __init__(
        self,
        sums: CentreSums | CentreTable,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        block_rows: int = 4096,
        block_centres: int = 65_536,
        eps: float = DEFAULT_EPS,
    ) -> None:
        self.table = sums.table() if isinstance(sums, CentreSums) else sums
        self.device = torch.device(device)
        self.centres = torch.from_numpy(self.table.directions).to(self.device, dtype)
        self.block_rows, self.block_centres, self.eps = block_rows, block_centres, eps

    def score(self, embeddings: np.ndarray, identities: Sequence[str] | np.ndarray) -> ChunkScores:
        unit = l2_normalise(embeddings)
        own = self.table.index_of(identities)
        ccs, notes = leave_one_out_ccs(unit, own, self.table)
        nnccs, nearest = nearest_other_centre(
            unit, own, self.centres, self.block_rows, block_centres=self.block_centres
        )
        no_note = np.array([note is None for note in notes], dtype=bool)
        notes[(nearest < 0) & no_note] = NOTE_NO_OTHER_IDENTITY
        found = nearest >= 0
        names = np.full(len(nearest), None, dtype=object)
        names[found] = self.table.identities[nearest[found]]
        counts = np.where(own >= 0, self.table.counts[np.maximum(own, 0)], 0)
        return ChunkScores(
            ccs=ccs,
            nnccs=nnccs,
            cr=certainty_ratio(ccs, nnccs, self.eps),
            nearest=nearest,
            nearest_identity=names,
            identity_images=counts.astype(np.int64),
            note=notes,
        )


def classifiability(
    embeddings: np.ndarray, identities: Sequence[str] | np.ndarray, **index_options: Any
) -> ChunkScores:
    """CCS / NNCCS / CR for an in-memory set: centres from these images, then one scoring pass.

    ``embeddings``: (N, D) floats (normalised here); ``identities``: N names. ``index_options``: the keyword
    arguments of :class:`CentreIndex` (``device``, ``dtype``, ``block_rows``, ``block_centres``, ``eps``), with
    its defaults. Raises TypeError for an unknown option and ValueError for a block size below 1.
    """
    index = CentreIndex(CentreSums.from_chunk(embeddings, identities), **index_options)
    return index.score(embeddings, identities)
