"""EDC plot: FNMR against the discarded fraction, one line per quality method, written as a PNG.

Uses matplotlib's object API with the Agg canvas, so importing this module never changes the process-wide
backend and it works without a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .edc import EdcResult, ideal_fnmr


def _label(name: str, result: EdcResult) -> str:
    areas = ", ".join(
        f"pAUC@{limit:g} {value.normalised:.3f}" for limit, value in sorted(result.pauc.items())
    )
    return f"{name} ({areas})" if areas else name


def plot_edc(
    curves: Mapping[str, EdcResult], path: str | os.PathLike, title: str = "EDC", dpi: int = 150
) -> Path:
    """Draw each method's EDC and write a PNG to ``path`` (parent folders are created). Step-integrated curves
    are drawn as steps (the FNMR holds until the next point), trapezoid ones as straight segments; the points of
    a coarse grid are marked. A method with a bootstrap ``band`` gets its 95 % band shaded in its colour. The
    random-discard curve (expected FNMR = FNMR(0)) and the ideal curve (``edc.ideal_fnmr``, at every removal
    count up to 2,000 and then on 2,000 points) of the first method are drawn as grey references: all methods
    share the pairs, so they share both."""
    if not curves:
        raise ValueError("no EDC curves to plot")
    fig = Figure(figsize=(7.0, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, result in curves.items():
        style = "steps-post" if result.integration == "step" else "default"
        marker = "o" if result.discard.size <= 50 else None  # mark the points of a coarse grid
        (line,) = ax.plot(
            result.discard,
            result.fnmr,
            drawstyle=style,
            linewidth=1.6,
            marker=marker,
            markersize=3.5,
            label=_label(name, result),
        )
        if result.band is not None:
            ax.fill_between(
                result.discard,
                result.band.fnmr_lo,
                result.band.fnmr_hi,
                step="post" if result.integration == "step" else None,
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
    ref = next(iter(curves.values()))
    ax.plot(
        [0.0, float(ref.discard[-1])],
        [ref.fnmr0, ref.fnmr0],
        color="0.45",
        linestyle="--",
        linewidth=1.0,
        label="random discarding (expected)",
    )
    if ref.ideal is not None:  # closed form: drawn at every removal count, not only at the grid points
        n_pairs = ref.n_genuine + ref.n_impostor
        top = int(np.floor(float(ref.discard[-1]) * n_pairs))
        removed = np.unique(np.r_[np.linspace(0, top, 2000).astype(np.int64), np.arange(min(top, 2000) + 1)])
        n_fnm = int(round(ref.fnmr0 * ref.n_genuine))
        ax.plot(
            removed / n_pairs,
            ideal_fnmr(ref.n_genuine, n_fnm, ref.n_impostor, removed),
            drawstyle="steps-post",
            color="0.45",
            linestyle=":",
            linewidth=1.2,
            label="ideal (false non-matches first)",
        )
    first = next(iter(curves.values()))
    ax.set_xlabel("fraction of pairs discarded (lowest pair quality first)")
    ax.set_ylabel(f"FNMR at FMR = {first.fmr_target:g} ({first.threshold_mode} threshold)")
    ax.set_title(title)
    ax.set_xlim(0.0, max(float(r.discard[-1]) for r in curves.values()))
    ax.set_ylim(bottom=0.0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png")
    return out
