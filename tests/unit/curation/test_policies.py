"""Filter policies on a hand-built table: one reason per row, counts per reason, flags, report counts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from froq_ray.curation.label_noise import flag_label_noise
from froq_ray.curation.policies import IdentityCap, NoiseRule, PolicySettings, apply_policies
from froq_ray.curation.report import histograms_png, identity_stats, summary

nan = np.nan
ROWS = [  # status, identity, quality, ccs, nnccs
    ("ok", "A", 0.9, 0.6, 0.1),
    ("ok", "A", 0.8, 0.5, 0.2),
    ("ok", "A", 0.7, 0.4, 0.1),
    ("ok", "A", 0.1, 0.5, 0.0),  # 3: lowest quality
    ("ok", "A", 0.6, 0.1, 0.3),  # 4: noise by both rules
    ("ok", "B", 0.5, 0.6, 0.1),
    ("ok", "B", 0.4, 0.15, 0.0),  # 6: noise by the CCS floor only
    ("ok", "C", 0.95, 0.3, 0.5),  # 7: noise by the margin only
    ("ok", "D", 0.85, nan, 0.2),  # 8: singleton, CCS undefined: never flagged
    ("corrupt", None, nan, nan, nan),
    ("ok", None, 0.5, nan, nan),  # 10: no identity
    ("ok", "E", 0.2, 0.6, 0.1),
    ("ok", "E", nan, 0.6, 0.1),  # 12: no quality
]
NO_NOISE = NoiseRule(ccs_floor=None, margin=None)


def table() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=["status", "identity", "quality", "ccs", "nnccs"])
    frame["path"] = [f"/img/{i:02d}.jpg" for i in range(len(frame))]
    frame["cr"] = frame["ccs"] / (frame["nnccs"] + 1)
    return frame


def reasons(settings: PolicySettings) -> pd.DataFrame:
    out = apply_policies(table(), settings)
    assert len(out) == len(ROWS) and out["reason"].notna().all()
    assert (out["keep"] == (out["reason"] == "kept")).all()
    return out


def counts(out: pd.DataFrame) -> dict[str, int]:
    return {k: int(v) for k, v in out["reason"].value_counts().items() if k != "kept"}


def dropped_rows(out: pd.DataFrame, reason: str) -> list[int]:
    return out.index[out["reason"] == reason].tolist()


def test_label_noise_rules():
    flags = flag_label_noise(table()["ccs"], table()["nnccs"], 0.2, 0.0)
    assert np.flatnonzero(flags.flagged).tolist() == [4, 6, 7]
    assert flags.rule[[4, 6, 7]].tolist() == ["ccs_floor+nearest_other", "ccs_floor", "nearest_other"]
    assert np.flatnonzero(
        flag_label_noise(table()["ccs"], table()["nnccs"], None, 0.15).flagged
    ).tolist() == [4, 7]
    assert not flag_label_noise(table()["ccs"], table()["nnccs"], None, 0.25).flagged.any()
    assert not flag_label_noise(table()["ccs"], table()["nnccs"], None, None).flagged.any()


def test_default_settings_report_label_noise_without_dropping_and_keep_failed_rows_as_not_kept():
    out = reasons(PolicySettings())
    assert counts(out) == {"corrupt": 1, "identity_missing": 1}
    assert out["label_noise"].tolist() == [i in (4, 6, 7) for i in range(len(ROWS))]
    dropping = reasons(PolicySettings(label_noise=NoiseRule(drop=True)))
    assert counts(dropping) == {"label_noise": 3, "corrupt": 1, "identity_missing": 1}
    assert dropped_rows(dropping, "label_noise") == [4, 6, 7]
    assert dropping["label_noise"].tolist() == out["label_noise"].tolist()


def test_eval_overlap_drops_its_identities_first_unless_report_only():
    frame = table().assign(eval_overlap=lambda t: t["identity"].eq("B").to_numpy())
    out = apply_policies(frame, PolicySettings(label_noise=NoiseRule(drop=True)))
    assert dropped_rows(out, "eval_overlap") == [5, 6]  # row 6 is also label noise: the first reason wins
    assert dropped_rows(out, "label_noise") == [4, 7]
    kept = apply_policies(frame, PolicySettings(drop_eval_overlap=False))
    assert "eval_overlap" not in set(kept["reason"])


def test_quality_floor_and_missing_quality():
    out = reasons(PolicySettings(quality_floor=0.35, label_noise=NO_NOISE))
    assert dropped_rows(out, "quality_floor") == [3, 11] and dropped_rows(out, "quality_missing") == [12]


def test_global_lowest_fraction_counts_rows_already_dropped():
    out = reasons(PolicySettings(drop_lowest_fraction=0.25, label_noise=NO_NOISE))
    # 11 usable rows -> floor(2.75) = 2 lowest: row 12 (no quality, dropped first) and row 3
    assert dropped_rows(out, "quality_missing") == [12] and dropped_rows(out, "global_lowest") == [3]
    out = reasons(PolicySettings(drop_lowest_fraction=0.5, label_noise=NO_NOISE))
    assert sorted(dropped_rows(out, "global_lowest")) == [3, 5, 6, 11]  # 5 lowest: 12, 3, 11, 6, 5


def test_per_identity_top_k_and_top_fraction_with_minimum():
    out = reasons(PolicySettings(per_identity=IdentityCap(top_k=2), label_noise=NO_NOISE))
    assert dropped_rows(out, "identity_cap") == [2, 3, 4]  # A keeps 0.9 and 0.8
    out = reasons(
        PolicySettings(per_identity=IdentityCap(top_fraction=0.5, min_count=3), label_noise=NO_NOISE)
    )
    assert dropped_rows(out, "identity_cap") == [3, 4]  # A: ceil(2.5) = 3 kept; B: min 3 > its 2 rows
    out = reasons(PolicySettings(per_identity=IdentityCap(top_fraction=0.2), label_noise=NO_NOISE))
    assert dropped_rows(out, "identity_cap") == [1, 2, 3, 4, 6]  # A keeps 1, B keeps 1


def test_small_identities_are_dropped_after_the_other_policies():
    out = reasons(PolicySettings(min_identity_images=2, label_noise=NO_NOISE))
    assert dropped_rows(out, "identity_too_small") == [7, 8]


def test_composed_policies_and_the_report():
    settings = PolicySettings(quality_floor=0.35, min_identity_images=2, label_noise=NoiseRule(drop=True))
    out = reasons(settings)
    assert counts(out) == {
        "quality_missing": 1,
        "quality_floor": 2,
        "label_noise": 3,
        "identity_too_small": 2,
        "corrupt": 1,
        "identity_missing": 1,
    }
    assert out.index[out["keep"]].tolist() == [0, 1, 2]
    stats = identity_stats(out).set_index("identity")
    assert stats.loc[
        "A", ["images", "images_kept", "dropped_quality_floor", "dropped_label_noise"]
    ].tolist() == [5, 3, 1, 1]
    assert stats["lost"].to_dict() == {"A": False, "B": True, "C": True, "D": True, "E": True}
    result = summary(out, identity_stats(out))
    assert (result["rows"], result["rows_ok"], result["kept"], result["dropped"]) == (13, 12, 3, 10)
    assert result["dropped_by_reason"] == counts(out)
    assert (result["identities"], result["identities_kept"], result["identities_lost"]) == (5, 1, 4)
    assert result["label_noise_by_rule"] == {"ccs_floor": 1, "ccs_floor+nearest_other": 1, "nearest_other": 1}
    assert histograms_png(out, identity_stats(out), "quality", bins=5).startswith(b"\x89PNG")


def test_settings_from_the_config_mapping():
    settings = PolicySettings.from_mapping(
        {
            "quality_floor": 0.1,
            "drop_lowest_fraction": 0.0,
            "min_identity_images": 3,
            "per_identity": {"top_k": 4, "top_fraction": None, "min_count": 0},
            "label_noise": {"ccs_floor": None, "margin": 0.1, "drop": False},
        }
    )
    assert settings.per_identity.limits(np.array([2, 9])).tolist() == [2, 4]
    assert settings.label_noise == NoiseRule(None, 0.1, False) and settings.uses_quality
