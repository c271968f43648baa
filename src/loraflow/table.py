"""Table stage: one row per grid point plus the base model, best run marked, as CSV and Markdown.

`write_partial_comparison` is called by the workflow's `onerror` handler (e.g. under --keep-going):
it tabulates the runs that finished and lists the ones that failed with the error from their log.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from loraflow.io import atomic_path, read_json, write_json, write_text

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"test_loss", "perplexity"}
METRIC_COLUMN = {"eval_loss": "test_loss"}
EVAL_KEYS = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match")
OPTIONAL_EVAL_KEYS = ("accuracy", "macro_f1", "consistency")
SPEED_KEYS = ("tok_s_base", "tok_s_adapter", "tok_s_merged")

COLUMNS = [
    "run", "best", "status", "point", "seed", "method", "r", "alpha", "alpha_over_r", "targets", "trainable_params", "trainable_pct",
    "adapter_mb", "optimizer", "eff_rank", "suggested_r", "train_time_s", "peak_memory_mb", "final_train_loss", "val_loss", "test_loss", "perplexity",
    *EVAL_KEYS, *OPTIONAL_EVAL_KEYS, "merge_max_abs_diff", "merge_check", *SPEED_KEYS,
]
# Columns averaged over seeds in the per-point table.
POINT_METRICS = ["final_train_loss", "val_loss", "test_loss", "perplexity", *EVAL_KEYS, *OPTIONAL_EVAL_KEYS]
DECIMALS = {"trainable_pct": 4, "final_train_loss": 4, "val_loss": 4, "test_loss": 4, "alpha_over_r": 2, "adapter_mb": 2}


def eval_columns(m: dict) -> dict:
    return {"test_loss": m["eval_loss"], "perplexity": m["perplexity"], **{k: m[k] for k in EVAL_KEYS},
            **{k: m[k] for k in OPTIONAL_EVAL_KEYS if k in m}}


def grid_columns(name: str, hp: dict) -> dict:
    """The columns a run has from the config alone (also for runs that failed)."""
    r, alpha = hp.get("r"), hp.get("lora_alpha")
    return {"run": name, "point": hp.get("point", name), "seed": hp.get("seed"), "method": hp.get("method", "lora"), "r": r,
            "alpha": alpha, "alpha_over_r": alpha / r if r and alpha else None, "targets": hp.get("targets")}


def run_row(name: str, hp: dict, train_stats: dict, metrics: dict, merge_check: dict | None) -> dict:
    """`merge_check` is None for a run with nothing to merge (full fine-tuning)."""
    merge = {"merge_check": "n/a"} if merge_check is None else {
        "merge_max_abs_diff": merge_check["max_abs_logit_diff"], "merge_check": "pass" if merge_check["passed"] else "FAIL",
        **{k: merge_check.get(k) for k in SPEED_KEYS}}
    return {
        **grid_columns(name, hp), "status": "ok", "trainable_params": train_stats["trainable_params"], "trainable_pct": train_stats["trainable_pct"],
        "adapter_mb": train_stats["adapter_mb"], "optimizer": train_stats.get("optimizer"), "train_time_s": train_stats["train_time_s"],
        "peak_memory_mb": train_stats["peak_memory_mb"], "final_train_loss": train_stats["final_train_loss"],
        "val_loss": train_stats["best_eval_loss"], **eval_columns(metrics), **merge,
    }


def rank_columns(summary: dict | None) -> dict:
    """eff_rank: the largest effective rank over modules at the highest configured energy (rank_analysis);
    suggested_r: the smallest power of two holding it."""
    if summary is None:
        return {}
    top = max(summary["energies"])
    label = f"{100 * top:g}"
    return {"eff_rank": summary[f"eff_rank_{label}_max"], "suggested_r": summary["suggested_r"]}


def by_run(paths: list[str]) -> dict[str, str]:
    """Per-run files (results/runs/<run>/<file>) keyed by run name."""
    return {Path(p).parent.name: p for p in paths}


def mark_best(df: pd.DataFrame, best_metric: str) -> pd.DataFrame:
    column = METRIC_COLUMN.get(best_metric, best_metric)
    done = df[(df["run"] != "base") & (df["status"] == "ok")][column].dropna()
    df["best"] = ""
    if len(done):
        df.loc[done.idxmin() if column in LOWER_IS_BETTER else done.idxmax(), "best"] = f"best ({best_metric})"
    return df


def build_table(base_metrics: str, train_stats: list[str], metrics: list[str], merge_checks: list[str], runs: dict[str, dict],
                best_metric: str = "rougeL", rank_summaries: list[str] = ()) -> pd.DataFrame:
    """train_stats and metrics are in the order of `runs` (run name -> grid hyperparameters); merge
    checks and rank summaries exist for the runs with an adapter."""
    rows = [{"run": "base", "status": "ok", **eval_columns(read_json(base_metrics))}]
    merged, ranks = by_run(merge_checks), by_run(rank_summaries)
    for (name, hp), t, m in zip(runs.items(), train_stats, metrics, strict=True):
        row = run_row(name, hp, read_json(t), read_json(m), read_json(merged[name]) if name in merged else None)
        rows.append({**row, **rank_columns(read_json(ranks[name]) if name in ranks else None)})
    return finish(rows, best_metric)


def finish(rows: list[dict], best_metric: str) -> pd.DataFrame:
    """Columns in order; optional columns nobody filled are dropped; the best run marked."""
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    runs = df[df["run"] != "base"]
    drop = [c for c in (*OPTIONAL_EVAL_KEYS, "eff_rank", "suggested_r") if df[c].isna().all()]
    if (runs["point"].isna() | (runs["point"] == runs["run"])).all():
        drop.append("point")  # no seeds axis: the point is the run
    if runs["seed"].nunique() <= 1:
        drop.append("seed")
    if (runs["method"].fillna("lora") == "lora").all():
        drop.append("method")
    return mark_best(df.drop(columns=drop), best_metric)


def by_point(df: pd.DataFrame, best_metric: str) -> pd.DataFrame | None:
    """Mean and std over seeds per grid point (None when every point has a single seed)."""
    runs = df[(df["run"] != "base") & (df["status"] == "ok")]
    if "point" not in runs or runs.groupby("point").size().max() < 2:
        return None
    metrics = [c for c in POINT_METRICS if c in runs]
    grouped = runs.groupby("point", sort=False)
    out = grouped[[c for c in ("method", "r", "alpha", "targets", "trainable_params") if c in runs]].first()
    out.insert(0, "seeds", grouped.size())
    for c in metrics:
        out[f"{c}_mean"] = grouped[c].mean()
        out[f"{c}_std"] = grouped[c].std(ddof=1)
    column = METRIC_COLUMN.get(best_metric, best_metric) + "_mean"
    out["best"] = ""
    out.loc[out[column].idxmin() if column.removesuffix("_mean") in LOWER_IS_BETTER else out[column].idxmax(), "best"] = f"best mean ({best_metric})"
    return out.reset_index()


def points_markdown(points: pd.DataFrame) -> str:
    metrics = [c.removesuffix("_mean") for c in points.columns if c.endswith("_mean")]
    head = ["point", "best", "seeds", "r", "alpha", "targets", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for _, row in points.iterrows():
        cells = [row["point"], row["best"], str(row["seeds"]), _fmt(row["r"], "r"), _fmt(row["alpha"], "alpha"), row["targets"]]
        cells += [f"{row[m + '_mean']:.{DECIMALS.get(m, 2)}f} ± {row[m + '_std']:.{DECIMALS.get(m, 2)}f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "trainable_params":
        return f"{int(value):,}"
    if column in ("r", "seed", "suggested_r"):
        return str(int(value))
    if column == "alpha":
        return f"{value:g}"
    if column == "merge_max_abs_diff":
        return f"{value:.2g}"
    if isinstance(value, float):
        return f"{value:.{DECIMALS.get(column, 2)}f}"
    return str(value)


QUALITY = ["run", "best", "status", "seed", "method", "r", "alpha", "targets", "val_loss", "test_loss", "perplexity", *EVAL_KEYS, *OPTIONAL_EVAL_KEYS]
COST = ["run", "trainable_params", "trainable_pct", "adapter_mb", "optimizer", "r", "eff_rank", "suggested_r", "train_time_s", "peak_memory_mb", "final_train_loss",
        "merge_max_abs_diff", "merge_check", *SPEED_KEYS]


def to_markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |",
             "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row[c], c) for c in df.columns) + " |" for _, row in df.iterrows()]
    return "\n".join(lines) + "\n"


def write_tables(df: pd.DataFrame, out_csv: str, out_md: str, best_metric: str, out_points_csv: str | None = None) -> str:
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    points = by_point(df, best_metric)
    if out_points_csv:
        with atomic_path(out_points_csv) as tmp:
            (points if points is not None else pd.DataFrame()).to_csv(tmp, index=False)
    best = df.loc[df["best"] != "", "run"]
    headline = f"Best run by `{best_metric}`: **{best.iloc[0]}**." if len(best) else "No run finished."
    failed = df[df["status"] != "ok"]
    if len(failed):
        headline += f" {len(failed)} run(s) did not finish: " + ", ".join(failed["run"]) + "."
    quality = df[[c for c in QUALITY if c in df and (c != "status" or (df[c] != "ok").any())]]
    cost = df[df["run"] != "base"][[c for c in COST if c in df]]
    notes = ""
    if "eff_rank" in df:
        notes = ("\n`eff_rank`: the largest effective rank of any learned ΔW (rank holding the top configured share of its "
                 "energy, see `runs/<run>/rank_analysis.png`); `suggested_r`: the smallest power of two that holds it.\n")
        smaller = df[(df["run"] != "base") & df["suggested_r"].notna() & (df["suggested_r"] < df["r"])]
        if len(smaller):
            notes += "A smaller r would have sufficed for: " + ", ".join(f"{r.run} (r={int(r.r)} → {int(r.suggested_r)})" for r in smaller.itertuples()) + ".\n"
    md = (f"# LoRA comparison\n\n{headline} The `base` row is the untouched base model. "
          f"Every column is in `comparison.csv`.\n\n## Quality (test split)\n\n{to_markdown(quality)}"
          f"\n## Cost\n\n{to_markdown(cost)}{notes}")
    if points is not None:
        best_point = points.loc[points["best"] != "", "point"].iloc[0]
        md += f"\n## Across seeds (mean ± std)\n\nBest grid point by mean `{best_metric}`: **{best_point}**.\n\n{points_markdown(points)}"
    write_text(out_md, md)
    print(md, flush=True)
    return md


def write_comparison(
    base_metrics: str, train_stats: list[str], metrics: list[str], merge_checks: list[str],
    out_csv: str, out_md: str, runs: dict[str, dict], best_metric: str = "rougeL", out_points_csv: str | None = None,
    rank_summaries: list[str] = (), out_best: str | None = None,
) -> pd.DataFrame:
    """Table stage entry point."""
    df = build_table(base_metrics, train_stats, metrics, merge_checks, runs, best_metric, rank_summaries)
    write_tables(df, out_csv, out_md, best_metric, out_points_csv)
    if out_best:
        write_best(df, best_metric, out_best)
    return df


def write_best(df: pd.DataFrame, best_metric: str, out_best: str, split: str = "test") -> dict:
    """best.json: the run the table marked best, the metric and the split it was chosen on (read by the
    workflow to merge only that run, merge.runs: best)."""
    best = df.loc[(df["best"] != "") & (df["run"] != "base"), "run"]
    info = {"run": best.iloc[0] if len(best) else None, "metric": best_metric, "split": split}
    write_json(out_best, info)
    return info


def _last_error(log_path: Path) -> str:
    if not log_path.is_file():
        return "not run"
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors[-1] if errors else lines[-1] if lines else "no log output")[:300]


def _preflight_error(log_path: Path, run: str) -> str:
    """The pre-flight job checks every point in one log; the line naming this run, or the job's last error."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
    mine = [line.split(f"{run}: ", 1)[1] for line in lines if f" {run}: " in line]
    return mine[-1][:300] if mine else (f"not checked: {_last_error(log_path)}" if lines else "not run")


def write_partial_comparison(results_dir: str, runs: dict[str, dict], best_metric: str = "rougeL",
                             merged: list[str] | None = None) -> pd.DataFrame | None:
    """After a failed workflow: rows for finished runs, a FAILED row (stage + error) for the rest.
    `merged`: the runs whose merge is part of the run (merge.runs; None = every run with an adapter)."""
    res = Path(results_dir)
    if not (res / "base" / "eval.json").is_file():
        return None
    rows = [{"run": "base", "status": "ok", **eval_columns(read_json(res / "base" / "eval.json"))}]
    for name, hp in runs.items():
        d = res / "runs" / name
        files = {"preflight": d / "preflight.json", "train": d / "train_stats.json", "evaluate": d / "eval.json", "merge": d / "merge_check.json"}
        if hp.get("method") == "full" or (merged is not None and name not in merged):
            del files["merge"]
        if hp.get("method") == "combine":  # made by the combine stage, which writes its train_stats.json
            files = {"combine": files["train"], "evaluate": files["evaluate"], **({"merge": files["merge"]} if "merge" in files else {})}
        missing = [stage for stage, f in files.items() if not f.is_file()]
        if not missing:
            rank = d / "rank_summary.json"
            stats = read_json(files["combine"] if "combine" in files else files["train"])
            rows.append({**run_row(name, hp, stats, *(read_json(files[s]) if s in files else None for s in ("evaluate", "merge"))),
                         **rank_columns(read_json(rank) if rank.is_file() else None)})
            continue
        stage = missing[0]
        error = _preflight_error(res / "logs" / "preflight.log", name) if stage == "preflight" else _last_error(res / "logs" / stage / f"{name}.log")
        rows.append({**grid_columns(name, hp), "status": f"FAILED in {stage}: {error}"})
    df = finish(rows, best_metric)
    write_tables(df, str(res / "comparison.csv"), str(res / "comparison.md"), best_metric)
    return df
