"""Distillation accuracy report on LFW-dev (issue 8), from the outputs of benchmarks/distill_lfw.sh.

Teacher: FROQ with MobileFaceNet and a folds 1-3 calibration; its annotations (quality + embedding) of all LFW-dev
images and of the degraded folds 4-5 copy (benchmarks/make_degraded.py, the FROQ core report's copy). Students:
trained by `froq distill` on folds 1-3 (clean + self-training degraded copies labelled by the same teacher),
then run by `froq annotate --set scoring.mode=student` on folds 4-5, clean and degraded.

Per split: Spearman and Pearson of each student with the teacher, and EDC FNMR(0) / pAUC@0.2 / pAUC@0.3 with
recognition by the teacher's FR model (MobileFaceNet embeddings from the teacher's annotations), against random.

Writes docs/accuracy-distill.md, docs/results/accuracy_distill.json and docs/edc-distill-lfw45-{clean,degraded}.png.

Run from the repository root as a module (it imports benchmarks.lfw_manifests):
  .venv/bin/python -m benchmarks.distill_report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._report import fold_identities, split_record, split_section, write_results
from froq_ray.evaluation.plot import plot_edc
from froq_ray.evaluation.protocol import compute_edc_curves, edc_markdown_table, results_table

SPLITS = ("clean", "degraded")
COLUMNS = ["method", "spearman", "pearson", "fnmr0", "pauc@0.2", "pauc@0.3"]


def ok_rows(folder: Path, columns: list[str]) -> pd.DataFrame:
    df = pd.read_parquet(folder, columns=["path", "status", *columns])
    df = df[df["status"] == "ok"].drop(columns="status")
    return df.set_index("path").sort_index()


def split_frame(teacher: Path, students: dict[str, Path], keep_ids: set[str] | None) -> pd.DataFrame:
    """Teacher rows (identity, quality, embedding) joined by path with each student's quality."""
    df = ok_rows(teacher, ["identity", "quality", "embedding"]).rename(columns={"quality": "teacher"})
    if keep_ids is not None:
        df = df[df["identity"].isin(keep_ids)]
    for name, folder in students.items():
        q = ok_rows(folder, ["quality"])["quality"].rename(name)
        missing = df.index.difference(q.index)
        if len(missing):
            raise SystemExit(
                f"{folder}: no ok student row for {len(missing)} teacher images, e.g. {missing[0]}"
            )
        df = df.join(q)
    return df


def evaluate(df: pd.DataFrame, students: list[str], png: Path, title: str, seed: int) -> pd.DataFrame:
    emb = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    qualities = {"teacher FROQ": df["teacher"].to_numpy(np.float64)}
    qualities |= {name: df[name].to_numpy(np.float64) for name in students}
    qualities["random"] = np.random.default_rng(seed).random(len(df))
    curves = compute_edc_curves(emb, df["identity"].to_numpy(object), qualities, limits=(0.2, 0.3))
    plot_edc(curves, png, title=title)
    table = results_table(curves)
    teacher = pd.Series(qualities["teacher FROQ"])
    table["spearman"] = [teacher.corr(pd.Series(qualities[m]), method="spearman") for m in table["method"]]
    table["pearson"] = [teacher.corr(pd.Series(qualities[m]), method="pearson") for m in table["method"]]
    return table


def student_info(folder: Path) -> dict:
    card = json.loads((folder / "card.json").read_text())
    keep = ("arch", "input_size", "arch_options", "params", "flops", "target", "teacher", "validation")
    info = {k: card[k] for k in keep if k in card}
    data, training = card.get("data", {}), card.get("training", {})
    info["summary"] = {
        "train_rows": data.get("train_rows"),
        "validation_rows": data.get("validation_rows"),
        "epochs": training.get("epochs_completed"),
        "lr": training.get("lr"),
        "loss": training.get("loss"),
        "validation_spearman": round(card.get("validation", {}).get("spearman", float("nan")), 4),
    }
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", default="../shared/data/lfw-dev")
    ap.add_argument("--root", default=".bench/distill", help="distill_lfw.sh output root")
    ap.add_argument(
        "--students",
        default="tiny_cnn-64,mobilefacenet_student-64,mobilefacenet_student-64-energy,mobilefacenet_student-112-energy",
    )
    ap.add_argument("--docs", default="docs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    lfw, root, docs = Path(args.lfw), Path(args.root), Path(args.docs)
    names = args.students.split(",")
    eval_ids = fold_identities(lfw, [4, 5])
    report: dict = {"students": {n: student_info(root / n / "artifact") for n in names}, "splits": {}}
    tables = {}
    for split in SPLITS:
        teacher = root / f"teacher-{split}"
        df = split_frame(
            teacher, {n: root / n / f"ann-{split}" for n in names}, eval_ids if split == "clean" else None
        )
        png = docs / f"edc-distill-lfw45-{split}.png"
        table = evaluate(
            df, names, png, f"EDC, LFW-dev folds 4-5 ({split}), MobileFaceNet, FMR 1e-3", args.seed
        )
        tables[split] = table
        report["splits"][split] = split_record(table, len(df), int(df["identity"].nunique()))
        print(f"\n{split}: {len(df)} images\n{edc_markdown_table(table, columns=COLUMNS)}")
    write_results(docs / "results" / "accuracy_distill.json", report)
    write_markdown(docs / "accuracy-distill.md", report, tables)


def pauc_gaps(table: pd.DataFrame, name: str) -> tuple[float, float]:
    """A student's pAUC minus the teacher's, at 0.2 and 0.3."""
    t = table.set_index("method")
    return tuple(float(t.loc[name, c] - t.loc["teacher FROQ", c]) for c in ("pauc@0.2", "pauc@0.3"))


def meets_accuracy_target(table: pd.DataFrame, name: str) -> bool:
    """Issue 8's target: Spearman >= 0.90 with the teacher and pAUC within 0.02 of it at both limits."""
    spearman = table.set_index("method").loc[name, "spearman"]
    return bool(spearman >= 0.90 and max(abs(g) for g in pauc_gaps(table, name)) <= 0.02)


def targets(table: pd.DataFrame, name: str) -> str:
    spearman = table.set_index("method").loc[name, "spearman"]
    gap = pauc_gaps(table, name)
    return (
        f"`{name}`: Spearman {spearman:.3f} (target >= 0.90), pAUC gap to the teacher "
        f"{gap[0]:+.3f} @0.2 / {gap[1]:+.3f} @0.3 (target within 0.02): "
        f"{'met' if meets_accuracy_target(table, name) else 'NOT met'}"
    )


def read_cost(cost_json: Path) -> dict | None:
    """benchmarks/student_cost.py's output, None when it has not been run."""
    return json.loads(cost_json.read_text()) if cost_json.is_file() else None


def both_targets(table: pd.DataFrame, students: dict, cost: dict | None) -> list[str]:
    """Which students meet the accuracy target, and how fast each is against the teacher FROQ on this CPU."""
    if cost is None:
        return []
    speed = {}
    for row in cost["rows"]:
        for name in students:
            if row["model"].endswith(f"({name})"):
                speed[name] = row["speedup_vs_teacher_froq"]
    lines = [
        "Accuracy and cost together (speed from the cost table below, target >= 10x the teacher FROQ for the "
        "smallest student):",
        "",
    ]
    for name in students:
        accurate = meets_accuracy_target(table, name)
        fast = speed.get(name)
        lines.append(
            f"- `{name}`: accuracy target {'met' if accurate else 'not met'}; CPU speed "
            f"{'not measured' if fast is None else f'{fast}x the teacher FROQ'}"
        )
    return [*lines, ""]


def write_markdown(path: Path, report: dict, tables: dict[str, pd.DataFrame]) -> None:
    cost = read_cost(path.parent / "results" / "student_cost.json")
    lines = [
        "# Distilled students on LFW-dev (teacher: FROQ, MobileFaceNet)",
        "",
        "Generated by `benchmarks/distill_report.py` from the outputs of `benchmarks/distill_lfw.sh`.",
        "",
        (
            "Teacher: FROQ with MobileFaceNet and `docs/results/mobilefacenet-lfw-folds123-sample300.calibration.json` "
            "(300 images of the folds 1-3 identities). Students trained on the folds 1-3 images (2,320) plus one "
            "teacher-labelled degraded copy of each (self-training, all six kinds), identity-disjoint 80/20 split; "
            "evaluated on folds 4-5 (never seen), clean and the degraded copy of the FROQ core report."
        ),
        "",
    ]
    for name, info in report["students"].items():
        options = {
            k: (Path(v).name if k == "init_weights" else v) for k, v in info.get("arch_options", {}).items()
        }
        lines.append(
            f"- `{name}`: {info.get('arch')} at {info.get('input_size')} px, options `{json.dumps(options)}`, "
            f"{info.get('params', 0):,} "
            f"params, {info.get('flops', 0) / 1e6:,.1f} MFLOPs/image; card: "
            f"`{json.dumps(info['summary'])}`"
        )
    lines += [
        "",
        (
            "Spearman / Pearson: with the teacher's quality on the same images. FNMR(0) at FMR 1e-3 (threshold "
            "fixed before discarding), pAUC normalised (1.0 = random, lower is better), recognition by the "
            "teacher's MobileFaceNet embeddings."
        ),
        "",
    ]
    for split, table in tables.items():
        caption = f"EDC: `edc-distill-lfw45-{split}.png`."
        lines += split_section(
            report, split, table, "## Folds 4-5", COLUMNS, caption, blank_before_caption=False
        )
        if split == "degraded":
            lines += [f"- {targets(table, n)}" for n in report["students"]] + [""]
            lines += both_targets(table, report["students"], cost)
    lines += cost_lines(cost)
    path.write_text("\n".join(lines) + "\n")


def cost_lines(cost: dict | None) -> list[str]:
    """The cost table of benchmarks/student_cost.py, when it has been run."""
    if cost is None:
        return ["Cost table: not measured (run `benchmarks/student_cost.py`).", ""]
    lines = [
        "## Cost (CPU)",
        "",
        (
            f"`benchmarks/student_cost.py` ({cost['threads']} torch threads, batch {cost['batch']}, best of "
            f"{cost['rounds']} round-robin rounds, uint8 112 px crops in; load average at the end "
            f"{cost['machine']['loadavg_at_end'][0]:.2f}):"
        ),
        "",
        "| model | params | MFLOPs/image | CPU images/s | x teacher FROQ | x pseudo-label teacher |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['model']} | {r['params']:,} | {r['mflops_per_image']:,} | {r['cpu_images_per_s']:,} | "
        f"{r['speedup_vs_teacher_froq']} | {r['speedup_vs_pseudo_label']} |"
        for r in cost["rows"]
    ]
    return [*lines, "", "GPU: not measured (no GPU was lent to this task).", ""]


if __name__ == "__main__":
    main()
