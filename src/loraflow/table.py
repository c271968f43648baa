"""Table stage: one row per grid point plus the base model, best run marked, as CSV and Markdown.

`write_partial_comparison` is called by the workflow's `onerror` handler (e.g. under --keep-going):
it tabulates the runs that finished and lists the ones that failed with the error from their log.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from loraflow.io import atomic_path, read_json, write_text

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"test_loss", "perplexity"}
METRIC_COLUMN = {"eval_loss": "test_loss"}
EVAL_KEYS = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match")

COLUMNS = [
    "run", "best", "status", "r", "alpha", "alpha_over_r", "targets", "trainable_params", "trainable_pct", "adapter_mb",
    "train_time_s", "peak_memory_mb", "final_train_loss", "val_loss", "test_loss", "perplexity",
    *EVAL_KEYS, "merge_max_abs_diff", "merge_check",
]
DECIMALS = {"trainable_pct": 4, "final_train_loss": 4, "val_loss": 4, "test_loss": 4, "alpha_over_r": 2, "adapter_mb": 2}


def eval_columns(m: dict) -> dict:
    return {"test_loss": m["eval_loss"], "perplexity": m["perplexity"], **{k: m[k] for k in EVAL_KEYS}}


def run_row(name: str, hp: dict, train_stats: dict, metrics: dict, merge_check: dict) -> dict:
    return {
        "run": name, "status": "ok", "r": hp["r"], "alpha": hp["lora_alpha"], "alpha_over_r": hp["lora_alpha"] / hp["r"],
        "targets": hp["targets"], "trainable_params": train_stats["trainable_params"], "trainable_pct": train_stats["trainable_pct"],
        "adapter_mb": train_stats["adapter_mb"], "train_time_s": train_stats["train_time_s"],
        "peak_memory_mb": train_stats["peak_memory_mb"], "final_train_loss": train_stats["final_train_loss"],
        "val_loss": train_stats["best_eval_loss"], **eval_columns(metrics),
        "merge_max_abs_diff": merge_check["max_abs_logit_diff"], "merge_check": "pass" if merge_check["passed"] else "FAIL",
    }


def mark_best(df: pd.DataFrame, best_metric: str) -> pd.DataFrame:
    column = METRIC_COLUMN.get(best_metric, best_metric)
    done = df[(df["run"] != "base") & (df["status"] == "ok")][column].dropna()
    df["best"] = ""
    if len(done):
        df.loc[done.idxmin() if column in LOWER_IS_BETTER else done.idxmax(), "best"] = f"best ({best_metric})"
    return df


def build_table(base_metrics: str, train_stats: list[str], metrics: list[str], merge_checks: list[str], runs: dict[str, dict], best_metric: str = "rougeL") -> pd.DataFrame:
    """Per-run file lists are in the order of `runs` (run name -> grid hyperparameters)."""
    rows = [{"run": "base", "status": "ok", **eval_columns(read_json(base_metrics))}]
    for (name, hp), t, m, c in zip(runs.items(), train_stats, metrics, merge_checks, strict=True):
        rows.append(run_row(name, hp, read_json(t), read_json(m), read_json(c)))
    return mark_best(pd.DataFrame(rows).reindex(columns=COLUMNS), best_metric)


def _fmt(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "trainable_params":
        return f"{int(value):,}"
    if column == "merge_max_abs_diff":
        return f"{value:.2g}"
    if isinstance(value, float):
        return f"{value:.{DECIMALS.get(column, 2)}f}"
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |",
             "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row[c], c) for c in df.columns) + " |" for _, row in df.iterrows()]
    return "\n".join(lines) + "\n"


def write_tables(df: pd.DataFrame, out_csv: str, out_md: str, best_metric: str) -> str:
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    best = df.loc[df["best"] != "", "run"]
    headline = f"Best run by `{best_metric}`: **{best.iloc[0]}**." if len(best) else "No run finished."
    failed = df[df["status"] != "ok"]
    if len(failed):
        headline += f" {len(failed)} run(s) did not finish: " + ", ".join(failed["run"]) + "."
    md = f"# LoRA comparison\n\n{headline} The `base` row is the untouched base model.\n\n{to_markdown(df)}"
    write_text(out_md, md)
    print(md, flush=True)
    return md


def write_comparison(
    base_metrics: str, train_stats: list[str], metrics: list[str], merge_checks: list[str],
    out_csv: str, out_md: str, runs: dict[str, dict], best_metric: str = "rougeL",
) -> pd.DataFrame:
    """Table stage entry point."""
    df = build_table(base_metrics, train_stats, metrics, merge_checks, runs, best_metric)
    write_tables(df, out_csv, out_md, best_metric)
    return df


def _last_error(log_path: Path) -> str:
    if not log_path.is_file():
        return "not run"
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors[-1] if errors else lines[-1] if lines else "no log output")[:300]


def write_partial_comparison(results_dir: str, runs: dict[str, dict], best_metric: str = "rougeL") -> pd.DataFrame | None:
    """After a failed workflow: rows for finished runs, a FAILED row (stage + error) for the rest."""
    res = Path(results_dir)
    if not (res / "base" / "eval.json").is_file():
        return None
    rows = [{"run": "base", "status": "ok", **eval_columns(read_json(res / "base" / "eval.json"))}]
    for name, hp in runs.items():
        d = res / "runs" / name
        files = {"preflight": d / "preflight.json", "train": d / "train_stats.json", "evaluate": d / "eval.json", "merge": d / "merge_check.json"}
        missing = [stage for stage, f in files.items() if not f.is_file()]
        if not missing:
            rows.append(run_row(name, hp, *(read_json(files[s]) for s in ("train", "evaluate", "merge"))))
            continue
        stage = missing[0]
        error = _last_error(res / "logs" / stage / f"{name}.log")
        rows.append({"run": name, "status": f"FAILED in {stage}: {error}", "r": hp["r"], "alpha": hp["lora_alpha"],
                     "alpha_over_r": hp["lora_alpha"] / hp["r"], "targets": hp["targets"]})
    df = mark_best(pd.DataFrame(rows).reindex(columns=COLUMNS), best_metric)
    write_tables(df, str(res / "comparison.csv"), str(res / "comparison.md"), best_metric)
    return df
