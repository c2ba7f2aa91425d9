"""What a filter run reports: per-identity stats, a summary (kept / dropped per reason, identities lost) and
before/after histograms (PNG bytes, matplotlib object API on the Agg canvas: no global backend change)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import status as st
from .policies import KEPT, POLICY_REASONS


def reason_counts(decisions: pd.DataFrame) -> dict[str, int]:
    """Rows per reason (``kept`` included), sorted by reason."""
    counts = decisions["reason"].value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items())}


def identity_stats(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per identity (rows without an identity are left out): image counts before and after,
    drops per policy reason, mean quality / CCS / CR of the ok and of the kept images, label-noise flags,
    ``lost``."""
    rows = decisions[decisions["identity"].notna()]
    ok = rows["status"] == st.OK
    frame = pd.DataFrame(
        {
            "identity": rows["identity"].astype(str),
            "ok": ok,
            "kept": rows["keep"].astype(bool),
            "quality_ok": rows["quality"].where(ok),
            "quality_kept": rows["quality"].where(rows["keep"]),
            "ccs_ok": rows["ccs"].where(ok),
            "cr_ok": rows["cr"].where(ok),
            "cr_kept": rows["cr"].where(rows["keep"]),
            "label_noise": rows["label_noise"].astype(bool),
        }
    )
    for reason in POLICY_REASONS:
        frame[f"dropped_{reason}"] = (rows["reason"] == reason).to_numpy()
    grouped = frame.groupby("identity", sort=True)
    stats = pd.DataFrame(
        {
            "images": grouped.size(),
            "images_ok": grouped["ok"].sum(),
            "images_kept": grouped["kept"].sum(),
            "label_noise_flags": grouped["label_noise"].sum(),
            **{f"dropped_{r}": grouped[f"dropped_{r}"].sum() for r in POLICY_REASONS},
            "mean_quality_ok": grouped["quality_ok"].mean(),
            "mean_quality_kept": grouped["quality_kept"].mean(),
            "mean_ccs_ok": grouped["ccs_ok"].mean(),
            "mean_cr_ok": grouped["cr_ok"].mean(),
            "mean_cr_kept": grouped["cr_kept"].mean(),
        }
    ).reset_index()
    stats["lost"] = (stats["images_ok"] > 0) & (stats["images_kept"] == 0)
    count_columns = [
        "images",
        "images_ok",
        "images_kept",
        "label_noise_flags",
        *[f"dropped_{r}" for r in POLICY_REASONS],
    ]
    stats[count_columns] = stats[count_columns].astype(np.int64)
    return stats


def summary(decisions: pd.DataFrame, stats: pd.DataFrame, lost_listed: int = 100) -> dict[str, Any]:
    """Counts for the summary JSON (settings and inputs are added by the job)."""
    reasons = reason_counts(decisions)
    lost = stats.loc[stats["lost"], "identity"].tolist()
    notes = decisions["cr_note"].dropna().value_counts() if "cr_note" in decisions else pd.Series(dtype=int)
    rules = decisions["label_noise_rule"].dropna().value_counts()
    return {
        "rows": len(decisions),
        "rows_ok": int((decisions["status"] == st.OK).sum()),
        "kept": int(decisions["keep"].sum()),
        "dropped": int((~decisions["keep"]).sum()),
        "dropped_by_reason": {k: v for k, v in reasons.items() if k != KEPT},
        "label_noise_flagged": int(decisions["label_noise"].sum()),
        "label_noise_by_rule": {str(k): int(v) for k, v in sorted(rules.items())},
        "classifiability_undefined": {str(k): int(v) for k, v in sorted(notes.items())},
        "identities": int((stats["images_ok"] > 0).sum()),
        "identities_kept": int((stats["images_kept"] > 0).sum()),
        "identities_lost": len(lost),
        "identities_lost_listed": lost[:lost_listed],
    }


def _finite(values: pd.Series | np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return a[np.isfinite(a)]


def histograms_png(
    decisions: pd.DataFrame, stats: pd.DataFrame, quality_name: str, bins: int = 50, *, dpi: int = 120
) -> bytes:
    """Before (ok rows) / after (kept rows) histograms of quality, CR and images per identity: PNG bytes."""
    ok = decisions[decisions["status"] == st.OK]
    kept = decisions[decisions["keep"]]
    panels: list[tuple[str, np.ndarray, np.ndarray]] = [
        (quality_name, _finite(ok["quality"]), _finite(kept["quality"])),
        ("CR (certainty ratio)", _finite(ok["cr"]), _finite(kept["cr"])),
        (
            "images per identity",
            stats.loc[stats["images_ok"] > 0, "images_ok"].to_numpy(float),
            stats.loc[stats["images_kept"] > 0, "images_kept"].to_numpy(float),
        ),
    ]
    fig = Figure(figsize=(13.0, 3.8))
    FigureCanvasAgg(fig)
    for k, (title, before, after) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        both = np.concatenate([before, after])
        edges = np.histogram_bin_edges(both, bins=bins).tolist() if both.size else bins
        ax.hist(before, bins=edges, alpha=0.55, label=f"before ({before.size})")
        ax.hist(after, bins=edges, alpha=0.55, label=f"after ({after.size})")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("count")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()


def settings_dict(value: Any) -> Any:
    """A JSON-able copy of nested settings (dataclasses / mappings)."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: settings_dict(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(k): settings_dict(v) for k, v in value.items()}
    return value
