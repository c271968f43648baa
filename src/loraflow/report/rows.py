"""Result files into table rows: the columns of comparison.csv, one row per run from its stage outputs
(train_stats.json, eval.json, merge_check.json, rank_summary.json) plus the base row, and the best
run marked by the selection metric on validation.

Every per-run file is matched to its run by the run directory it lies in (`runs/<run>/...`), never
by its position in a list (`by_run`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from loraflow.io import read_json

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"test_loss", "perplexity", "eval_loss"}
METRIC_COLUMN = {"eval_loss": "test_loss"}
EVAL_KEYS = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match")
OPTIONAL_EVAL_KEYS = ("fact_acc", "answer_ok", "accuracy", "macro_f1", "consistency")
SPEED_KEYS = ("tok_s_base", "tok_s_adapter", "tok_s_merged")
CI_METRICS = ("test_loss", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "fact_acc", "answer_ok")
LABEL = {
    "rougeL": "ROUGE-L",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "bleu": "BLEU",
    "exact_match": "exact match",
    "eval_loss": "loss",
    "test_loss": "loss",
    "perplexity": "perplexity",
    "fact_acc": "fact accuracy",
    "answer_ok": "answer check",
    "retention": "retention",
}
AXES = {"r": "r", "alpha": "alpha", "lr": "lr", "targets": "targets", "method": "method"}

COLUMNS = [
    "run",
    "best",
    "status",
    "point",
    "seed",
    "method",
    "r",
    "alpha",
    "lr",
    "alpha_over_r",
    "scale",
    "targets",
    "precision",
    "trainable_params",
    "trainable_pct",
    "adapter_mb",
    "optimizer",
    "eff_rank",
    "suggested_r",
    "intruders",
    "intruders_reduced",
    "train_time_s",
    "peak_memory_mb",
    "final_train_loss",
    "val_loss",
    "val_metric",
    "test_loss",
    "perplexity",
    *EVAL_KEYS,
    *OPTIONAL_EVAL_KEYS,
    "retention",
    "val_retention",
    "retention_base_acc",
    "merge_max_abs_diff",
    "merge_check",
    *SPEED_KEYS,
]
# Columns averaged over seeds in the per-point table.
POINT_METRICS = [
    "final_train_loss",
    "val_loss",
    "val_metric",
    "test_loss",
    "perplexity",
    *EVAL_KEYS,
    *OPTIONAL_EVAL_KEYS,
    "retention",
]
DECIMALS = {
    "trainable_pct": 4,
    "final_train_loss": 4,
    "val_loss": 4,
    "test_loss": 4,
    "alpha_over_r": 2,
    "scale": 2,
    "adapter_mb": 2,
}


def metric_column(best_metric: str) -> str:
    return METRIC_COLUMN.get(best_metric, best_metric)


def lower_is_better(column: str) -> bool:
    return column in LOWER_IS_BETTER or column.removeprefix("val_") in LOWER_IS_BETTER


def eval_columns(m: dict) -> dict:
    cols = {
        "test_loss": m["eval_loss"],
        "perplexity": m["perplexity"],
        **{k: m[k] for k in EVAL_KEYS},
        **{k: m[k] for k in OPTIONAL_EVAL_KEYS if k in m},
    }
    if m.get("precision") is not None:
        cols["precision"] = m["precision"]
    ret = m.get("retention")
    if isinstance(ret, dict):
        if ret.get("measured_on") == "all items":  # the base: what it gets right defines the set (100 by construction)
            cols["retention_base_acc"] = ret["score"]
            cols["retention"] = 100.0 if ret["score"] > 0 else math.nan
        else:  # the test part is reported, the validation part may choose (table.retention_floor)
            cols["retention"] = ret.get("score_test", ret["score"])
            if "score_val" in ret:
                cols["val_retention"] = ret["score_val"]
    return cols


def val_columns(m: dict, best_metric: str) -> dict:
    """The validation figures of an eval.json: `val_loss` and `val_metric` (the selection metric)."""
    val = m.get("val")
    if not isinstance(val, dict):
        return {}
    cols = {
        "val_loss": val["eval_loss"],
        **{f"val_{k}": val[k] for k in (*EVAL_KEYS, "fact_acc", "answer_ok", "perplexity") if k in val},
    }
    key = "eval_loss" if best_metric == "eval_loss" else best_metric
    if key in val:
        cols["val_metric"] = val[key]
    return cols


def grid_columns(name: str, hp: dict) -> dict:
    """The columns a run has from the config alone (also for runs that failed)."""
    r, alpha = hp.get("r"), hp.get("lora_alpha")
    scale = None
    if r and alpha:
        scale = alpha / math.sqrt(r) if hp.get("method") == "rslora" else alpha / r
    return {
        "run": name,
        "point": hp.get("point", name),
        "seed": hp.get("seed"),
        "method": hp.get("method", "lora"),
        "r": r,
        "alpha": alpha,
        "lr": hp.get("learning_rate"),
        "alpha_over_r": alpha / r if r and alpha else None,
        "scale": scale,
        "targets": hp.get("targets"),
    }


def run_row(
    name: str, hp: dict, train_stats: dict, metrics: dict, merge_check: dict | None, best_metric: str = "rougeL"
) -> dict:
    """`merge_check` is None for a run with nothing merged (full fine-tuning, or merges not requested)."""
    merge = (
        {"merge_check": "n/a"}
        if merge_check is None
        else {
            "merge_max_abs_diff": merge_check["max_abs_logit_diff"],
            "merge_check": "pass" if merge_check["passed"] else "FAIL",
            **{k: merge_check.get(k) for k in SPEED_KEYS},
        }
    )
    return {
        **grid_columns(name, hp),
        "status": "ok",
        "trainable_params": train_stats["trainable_params"],
        "trainable_pct": train_stats["trainable_pct"],
        "adapter_mb": train_stats["adapter_mb"],
        "optimizer": train_stats.get("optimizer"),
        "train_time_s": train_stats["train_time_s"],
        "peak_memory_mb": train_stats["peak_memory_mb"],
        "intruders_reduced": train_stats.get("intruders_reduced"),  # reduce_intruders rows only
        "final_train_loss": train_stats["final_train_loss"],
        "val_loss": train_stats.get("best_eval_loss"),
        **eval_columns(metrics),
        **val_columns(metrics, best_metric),
        **merge,
    }


def rank_columns(summary: dict | None) -> dict:
    """eff_rank: the largest effective rank over modules at the highest configured energy (rank_analysis);
    suggested_r: the smallest power of two holding it; intruders: intruder dimensions over all modules
    (when the rank analysis had the base model's weights)."""
    if summary is None:
        return {}
    top = max(summary["energies"])
    label = f"{100 * top:g}"
    return {
        "eff_rank": summary[f"eff_rank_{label}_max"],
        "suggested_r": summary["suggested_r"],
        **({"intruders": summary["intruders_total"]} if summary.get("intruder_modules_analysed") else {}),
    }


def by_run(paths, names=None) -> dict[str, str]:
    """Per-run files keyed by run name: a {run: path} mapping as it is, or paths laid out as
    <results>/runs/<run>/<file>, keyed by their directory. A direct caller whose files do not lie in
    run directories may pass exactly one file per run in the order of `names` (logged)."""
    if isinstance(paths, dict):
        return {str(k): str(v) for k, v in paths.items()}
    paths = [str(p) for p in paths or ()]
    keyed = {Path(p).parent.name: p for p in paths}
    if names is None or len(keyed) == len(paths) and set(keyed) <= set(names):
        return keyed
    if len(paths) == len(names):
        log.warning("files not under runs/<run>/: matched to runs %s in the order given", list(names))
        return dict(zip(names, paths))
    raise ValueError(
        f"cannot match {len(paths)} files to runs {list(names)}: put them under runs/<run>/ or pass {{run: path}}"
    )


def choose_best(df: pd.DataFrame, best_metric: str) -> tuple[int | None, str]:
    """Index of the best finished run by the metric on validation, and where the choice came from.
    Falls back to the validation loss of training for the loss metrics; without any validation figure
    the test split has to choose, and the label says so."""
    runs = df[(df["run"] != "base") & (df["status"] == "ok")]
    lower = lower_is_better(metric_column(best_metric))
    for column, source in (
        ("val_metric", "validation"),
        ("val_loss", "validation loss") if lower else (None, ""),
        (metric_column(best_metric), "test (no validation scores)"),
    ):
        if column and column in runs and runs[column].notna().any():
            values = runs[column].dropna()
            return (values.idxmin() if lower else values.idxmax()), source
    return None, ""


def mark_best(df: pd.DataFrame, best_metric: str) -> pd.DataFrame:
    idx, source = choose_best(df, best_metric)
    df["best"] = ""
    df.attrs["best_source"] = source
    if idx is not None:
        df.loc[idx, "best"] = f"best ({best_metric})"
    return df


def build_table(
    base_metrics: str,
    train_stats,
    metrics,
    merge_checks=(),
    runs: dict[str, dict] | None = None,
    best_metric: str = "rougeL",
    rank_summaries=(),
    pruned: Sequence[dict] = (),
) -> pd.DataFrame:
    """One row per run of `runs` (run name -> grid hyperparameters) plus the base row, best run marked.
    Per-run files are matched by run name (see `by_run`); merge checks and rank summaries are optional
    (runs without one get `merge_check` n/a)."""
    runs = runs or {}
    names = list(runs)
    stats, evals = by_run(train_stats, names), by_run(metrics, names)
    merged, ranks = by_run(merge_checks), by_run(rank_summaries)
    rows = [{"run": "base", "status": "ok", **eval_columns(read_json(base_metrics))}]
    for name, hp in runs.items():
        if name not in stats or name not in evals:
            raise ValueError(f"run {name}: no train_stats.json / eval.json among the inputs")
        row = run_row(
            name,
            hp,
            read_json(stats[name]),
            read_json(evals[name]),
            read_json(merged[name]) if name in merged else None,
            best_metric,
        )
        rows.append({**row, **rank_columns(read_json(ranks[name]) if name in ranks else None)})
    return finish(
        [*rows, *pruned], best_metric
    )  # pruned: rows of points successive halving stopped (report/halving.py)


def finish(rows: list[dict], best_metric: str) -> pd.DataFrame:
    """Columns in order; optional columns nobody filled are dropped; the best run marked."""
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    runs = df[df["run"] != "base"]
    drop = [
        c
        for c in (
            *OPTIONAL_EVAL_KEYS,
            "eff_rank",
            "suggested_r",
            "intruders",
            "intruders_reduced",
            "precision",
            "retention",
            "val_retention",
            "retention_base_acc",
            "val_metric",
            "lr",
            "scale",
        )
        if df[c].isna().all()
    ]
    if (runs["point"].isna() | (runs["point"] == runs["run"])).all():
        drop.append("point")  # no seeds axis: the point is the run
    if runs["seed"].nunique() <= 1:
        drop.append("seed")
    if (runs["method"].fillna("lora") == "lora").all():
        drop.append("method")
    return mark_best(df.drop(columns=drop), best_metric)


def add_lm_eval(df: pd.DataFrame, files: dict[str, str]) -> pd.DataFrame:
    """lm-eval-harness scores per run (`lm_<task>_<metric>`) and their change against the base model."""
    from loraflow.evaluate.harness import lm_eval_columns

    cols = {name: lm_eval_columns(read_json(p)) for name, p in files.items() if Path(p).is_file()}
    base = cols.get("base", {})
    for idx, name in df["run"].items():
        for key, value in cols.get(name, {}).items():
            df.loc[idx, key] = value
            if name != "base" and key in base:
                df.loc[idx, f"{key}_vs_base"] = value - base[key]
    return df
