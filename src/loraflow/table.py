"""Table stage: one row per grid point plus the base model, best run marked, as CSV and Markdown."""

from __future__ import annotations

import logging
import math

import pandas as pd

from loraflow.io import atomic_path, read_json, write_text

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"eval_loss", "test_loss", "perplexity"}
METRIC_COLUMN = {"eval_loss": "test_loss"}

COLUMNS = [
    "run", "best", "r", "alpha", "alpha_over_r", "targets", "trainable_params", "trainable_pct", "adapter_mb",
    "train_time_s", "peak_memory_mb", "final_train_loss", "val_loss", "test_loss", "perplexity",
    "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "merge_max_abs_diff", "merge_check",
]


def base_row(metrics: dict) -> dict:
    return {"run": "base", **_eval_columns(metrics)}


def _eval_columns(m: dict) -> dict:
    return {"test_loss": m["eval_loss"], "perplexity": m["perplexity"], **{k: m[k] for k in ("bleu", "rouge1", "rouge2", "rougeL", "exact_match")}}


def run_row(name: str, train_stats: dict, metrics: dict, merge_check: dict) -> dict:
    r, alpha = train_stats["r"], train_stats["lora_alpha"]
    return {
        "run": name, "r": r, "alpha": alpha, "alpha_over_r": alpha / r, "targets": name.split("_", 2)[2],
        "trainable_params": train_stats["trainable_params"], "trainable_pct": train_stats["trainable_pct"],
        "adapter_mb": train_stats["adapter_mb"], "train_time_s": train_stats["train_time_s"],
        "peak_memory_mb": train_stats["peak_memory_mb"], "final_train_loss": train_stats["final_train_loss"],
        "val_loss": train_stats["best_eval_loss"], **_eval_columns(metrics),
        "merge_max_abs_diff": merge_check["max_abs_logit_diff"], "merge_check": "pass" if merge_check["passed"] else "FAIL",
    }


def build_table(base_metrics: str, run_names: list[str], train_stats: list[str], metrics: list[str], merge_checks: list[str], best_metric: str = "rougeL") -> pd.DataFrame:
    """Per-run file lists are in the order of `run_names`."""
    rows = [base_row(read_json(base_metrics))]
    for name, t, m, c in zip(run_names, train_stats, metrics, merge_checks, strict=True):
        rows.append(run_row(name, read_json(t), read_json(m), read_json(c)))
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    column = METRIC_COLUMN.get(best_metric, best_metric)
    tuned = df[df["run"] != "base"][column]
    best_idx = tuned.idxmin() if column in LOWER_IS_BETTER else tuned.idxmax()
    df["best"] = ""
    df.loc[best_idx, "best"] = f"best ({best_metric})"
    return df


def _fmt(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "trainable_params":
        return f"{int(value):,}"
    if column in ("r",):
        return str(int(value))
    if isinstance(value, float):
        digits = 4 if column in ("trainable_pct", "final_train_loss", "val_loss", "test_loss") else 3 if column == "merge_max_abs_diff" else 2
        return f"{value:.{digits}g}" if column == "merge_max_abs_diff" else f"{value:.{digits}f}"
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|"
    lines = [header, rule]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], c) for c in df.columns) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(
    base_metrics: str, run_names: list[str], train_stats: list[str], metrics: list[str], merge_checks: list[str],
    out_csv: str, out_md: str, best_metric: str = "rougeL",
) -> pd.DataFrame:
    """Table stage entry point."""
    df = build_table(base_metrics, run_names, train_stats, metrics, merge_checks, best_metric)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    best = df.loc[df["best"] != "", "run"].iloc[0]
    md = f"# LoRA comparison\n\nBest run by `{best_metric}`: **{best}**. The `base` row is the untouched base model.\n\n{to_markdown(df)}"
    write_text(out_md, md)
    print(md, flush=True)
    return df
