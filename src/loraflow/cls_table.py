"""Table stage of task seq_cls: one row per run plus the two baselines, best run marked.

results/comparison.csv holds every column; comparison.md a quality table (val/test accuracy,
macro-F1, per-class F1, accuracy by script) and a cost table, under a headline naming the best run
next to the baselines, so the table shows what LoRA adds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loraflow.io import atomic_path, read_json, write_text
from loraflow.table import to_markdown

BASELINES = {"majority": "always the most frequent training label", "untrained_head": "base encoder + seeded, untrained head"}
METRIC_COLUMN = {"macro_f1": "macro_f1", "accuracy": "test_accuracy"}
COST = ["run", "trainable_params", "trainable_pct", "adapter_mb", "train_time_s", "peak_memory_mb", "best_step", "final_train_loss"]


def metric_columns(m: dict) -> dict:
    """Quality columns from an eval.json: val/test accuracy, test macro-F1, per-class F1, by script."""
    test = m["test"]
    cols = {"val_accuracy": m["val"]["accuracy"], "test_accuracy": test["accuracy"], "macro_f1": test["macro_f1"]}
    cols.update({f"f1_{label}": c["f1"] for label, c in test["per_class"].items()})
    cols.update({f"test_acc_{script}": s["accuracy"] for script, s in test.get("accuracy_by_script", {}).items()})
    return cols


def run_row(name: str, hp: dict, stats: dict, metrics: dict) -> dict:
    return {
        "run": name, "method": hp.get("method", "lora"), "r": hp["r"], "alpha": hp["lora_alpha"], "targets": hp["targets"],
        **metric_columns(metrics),
        **{k: stats[k] for k in COST[1:]},
    }


def build_table(baseline_metrics: list[str], train_stats: list[str], metrics: list[str], runs: dict[str, dict], best_metric: str = "macro_f1") -> pd.DataFrame:
    """Baseline eval files are named <results>/baselines/<name>/eval.json; per-run lists follow `runs`."""
    rows = [{"run": Path(p).parent.name, **metric_columns(read_json(p))} for p in baseline_metrics]
    for (name, hp), s, m in zip(runs.items(), train_stats, metrics, strict=True):
        rows.append(run_row(name, hp, read_json(s), read_json(m)))
    df = pd.DataFrame(rows)
    grid = ["run", "method", "r", "alpha", "targets"]
    df = df[grid + [c for c in df.columns if c not in grid]]
    column = METRIC_COLUMN[best_metric]
    is_run = ~df["run"].isin(list(BASELINES))
    df.insert(1, "best", "")
    df.loc[df.loc[is_run, column].idxmax(), "best"] = f"best ({best_metric})"
    return df


def headline(df: pd.DataFrame, best_metric: str) -> str:
    best = df[df["best"] != ""].iloc[0]
    base = df.set_index("run")
    text = (f"Best run by `{best_metric}`: **{best['run']}**, test accuracy {best['test_accuracy']:.2f} %, "
            f"macro-F1 {best['macro_f1']:.2f}")
    known = [f"{name} {base.loc[name, 'test_accuracy']:.2f} %" for name in BASELINES if name in base.index]
    return text + (f" (baselines: {', '.join(known)})." if known else ".")


def write_comparison(
    baseline_metrics: list[str], train_stats: list[str], metrics: list[str], out_csv: str, out_md: str,
    runs: dict[str, dict], best_metric: str = "macro_f1",
) -> pd.DataFrame:
    """Stage entry point: comparison.csv and comparison.md (also printed)."""
    df = build_table(baseline_metrics, train_stats, metrics, runs, best_metric)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    per_class = [c for c in df.columns if c.startswith("f1_")]
    quality = [c for c in df.columns if c not in COST[1:] and (c not in per_class or len(per_class) <= 4)]
    notes = "; ".join(f"`{k}` = {v}" for k, v in BASELINES.items())
    md = (f"# LoRA text classification\n\n{headline(df, best_metric)}\n\nBaselines: {notes}. Accuracy, macro-F1 and "
          f"per-class F1 in %; `val_accuracy` on the validation split, the rest on the test split. Every column is in "
          f"`comparison.csv`.\n\n## Quality\n\n{to_markdown(df[quality])}\n## Cost\n\n"
          f"{to_markdown(df[~df['run'].isin(list(BASELINES))][COST].astype({'best_step': int}))}")
    write_text(out_md, md)
    print(md, flush=True)
    return df
