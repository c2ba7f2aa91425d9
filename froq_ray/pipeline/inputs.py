"""What the driver-side jobs that read annotation files whole (filter, review, distill) check in the rows they
read: one row per image across all the files."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd


def concat_rows(
    frames: Sequence[pd.DataFrame], error: Callable[[str], Exception], where: str = "across the annotations"
) -> pd.DataFrame:
    """The rows of ``frames`` (one frame per annotation file, each with a ``path`` column) as one frame, in
    order, with a fresh index. A path in more than one row raises ``error`` with one line naming how many rows
    repeat an earlier path and the first of them: ``"<n> path(s) appear more than once <where>, e.g. <path>"``.
    ``frames`` must not be empty (``ValueError`` from :func:`pandas.concat`)."""
    rows = pd.concat(frames, ignore_index=True)
    repeated = rows["path"][rows["path"].duplicated()]
    if len(repeated):
        raise error(f"{len(repeated)} path(s) appear more than once {where}, e.g. {repeated.iloc[0]}")
    return rows
