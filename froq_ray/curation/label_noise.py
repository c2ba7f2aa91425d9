"""Suspected label noise from class-centre similarities.

Two rules, each optional (``None`` switches it off); an image is flagged when any enabled rule fires:

- ``ccs_floor``: CCS < floor (the image is far from its own leave-one-out centre);
- ``margin``: NNCCS - CCS > margin (another identity's centre is closer than its own by more than the margin;
  margin 0 = "the nearest centre belongs to another identity").

An image whose CCS is NaN (the only image of its identity, see ``classifiability``) is never flagged: with no
other image there is nothing its label can disagree with. The filter reports how many such images there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULE_CCS_FLOOR = "ccs_floor"
RULE_MARGIN = "nearest_other"


@dataclass(frozen=True)
class LabelNoiseFlags:
    flagged: np.ndarray
    """bool (N,): any enabled rule fired."""
    rule: np.ndarray
    """object (N,): ``ccs_floor``, ``nearest_other``, ``ccs_floor+nearest_other`` or None."""


def flag_label_noise(
    ccs: np.ndarray, nnccs: np.ndarray, ccs_floor: float | None, margin: float | None
) -> LabelNoiseFlags:
    """Apply the enabled rules (see module doc) to aligned CCS / NNCCS arrays."""
    ccs = np.asarray(ccs, dtype=np.float64)
    nnccs = np.asarray(nnccs, dtype=np.float64)
    if ccs.shape != nnccs.shape:
        raise ValueError(f"ccs {ccs.shape} and nnccs {nnccs.shape} must have the same shape")
    defined = np.isfinite(ccs)
    low = defined & (ccs < ccs_floor) if ccs_floor is not None else np.zeros(ccs.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        closer = (
            defined & np.isfinite(nnccs) & (nnccs - ccs > margin)
            if margin is not None
            else np.zeros(ccs.shape, dtype=bool)
        )
    rule = np.full(ccs.shape, None, dtype=object)
    rule[low] = RULE_CCS_FLOOR
    rule[closer] = RULE_MARGIN
    rule[low & closer] = f"{RULE_CCS_FLOOR}+{RULE_MARGIN}"
    return LabelNoiseFlags(flagged=low | closer, rule=rule)
