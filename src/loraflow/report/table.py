"""Table stage: one row per run plus the base model, chosen on validation, reported on test with
intervals, as CSV and Markdown.

- **Selection on validation.** `best` is the run with the best `table.best_metric` on the validation
  split (generation metrics on `evaluate.val_samples` val rows, loss on all of them). Test metrics are
  reported for every run and labelled held-out; they never choose anything.
- **Uncertainty.** With per-row scores (`runs/<run>/scores.jsonl`, written by the evaluate stage) every
  test metric gets a 95 % paired-bootstrap interval over test rows, and the best metric a difference
  to the base model and to the best run with a p-value (loraflow.report.stats). Every run not significantly
  worse than the best on the test rows is marked "tied for best" (column `tied`; `best` names the
  chosen run alone, so tools that read it still find one run).
- **Which knob mattered.** Main effects of every grid axis with two or more levels (marginal means and
  differences with intervals) and the r x alpha interaction contrast (`comparison_effects.csv`).
- **What it cost.** Retention on the built-in general questions the base model answers correctly, and
  its change against the base, with intervals: on the test part of the retention items (reported) and
  the validation part (`val_retention`, which may choose).
- **Forgetting-aware choice** (`table.select`, `table.retention_floor`; loraflow.report.selection): the
  best run on validation among those that keep enough on the validation part of the retention set, the
  learned-vs-forgotten Pareto set, and the best run rejected for forgetting named in the headline.
- **How sure** (loraflow.report.certainty): P(best) per run (`p_best`), the smallest difference the test
  split detects, and the rows or seeds that would separate the top two; rows in groups are resampled as
  groups (`table.cluster_by`, loraflow.report.clusters).
- **Methods at their best rate** (loraflow.report.methods): with several methods, each at the learning
  rate that was best for it on validation (`method_best`).

Every per-run file is matched to its run by the run directory it lies in (`runs/<run>/...`), never
by its position in a list. `write_partial_comparison` is called by the workflow's `onerror` handler
(e.g. under --keep-going): it tabulates the runs that finished and lists the failed ones with the
error from their log.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from loraflow.evaluate.retention import retention_part
from loraflow.report import certainty
from loraflow.report import stats as st
from loraflow.report.clusters import row_groups
from loraflow.report.methods import methods_line, methods_markdown, methods_table
from loraflow.report.selection import Selection, apply_selection, pareto_markdown, selection_lines
from loraflow.io import atomic_path, read_json, read_jsonl, write_json, write_text

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"test_loss", "perplexity", "eval_loss"}
METRIC_COLUMN = {"eval_loss": "test_loss"}
EVAL_KEYS = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match")
OPTIONAL_EVAL_KEYS = ("fact_acc", "answer_ok", "accuracy", "macro_f1", "consistency")
SPEED_KEYS = ("tok_s_base", "tok_s_adapter", "tok_s_merged")
CI_METRICS = ("test_loss", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "fact_acc", "answer_ok")
LABEL = {"rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "bleu": "BLEU", "exact_match": "exact match",
         "eval_loss": "loss", "test_loss": "loss", "perplexity": "perplexity", "fact_acc": "fact accuracy", "answer_ok": "answer check",
         "retention": "retention"}
AXES = {"r": "r", "alpha": "alpha", "lr": "lr", "targets": "targets", "method": "method"}

COLUMNS = [
    "run", "best", "status", "point", "seed", "method", "r", "alpha", "lr", "alpha_over_r", "scale", "targets", "precision", "trainable_params",
    "trainable_pct", "adapter_mb", "optimizer", "eff_rank", "suggested_r", "intruders", "train_time_s", "peak_memory_mb", "final_train_loss", "val_loss",
    "val_metric", "test_loss", "perplexity", *EVAL_KEYS, *OPTIONAL_EVAL_KEYS, "retention", "val_retention", "retention_base_acc", "merge_max_abs_diff", "merge_check", *SPEED_KEYS,
]
# Columns averaged over seeds in the per-point table.
POINT_METRICS = ["final_train_loss", "val_loss", "val_metric", "test_loss", "perplexity", *EVAL_KEYS, *OPTIONAL_EVAL_KEYS, "retention"]
DECIMALS = {"trainable_pct": 4, "final_train_loss": 4, "val_loss": 4, "test_loss": 4, "alpha_over_r": 2, "scale": 2, "adapter_mb": 2}


def metric_column(best_metric: str) -> str:
    return METRIC_COLUMN.get(best_metric, best_metric)


def lower_is_better(column: str) -> bool:
    return column in LOWER_IS_BETTER or column.removeprefix("val_") in LOWER_IS_BETTER


def eval_columns(m: dict) -> dict:
    cols = {"test_loss": m["eval_loss"], "perplexity": m["perplexity"], **{k: m[k] for k in EVAL_KEYS},
            **{k: m[k] for k in OPTIONAL_EVAL_KEYS if k in m}}
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
    cols = {"val_loss": val["eval_loss"], **{f"val_{k}": val[k] for k in (*EVAL_KEYS, "fact_acc", "answer_ok", "perplexity") if k in val}}
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
    return {"run": name, "point": hp.get("point", name), "seed": hp.get("seed"), "method": hp.get("method", "lora"), "r": r,
            "alpha": alpha, "lr": hp.get("learning_rate"), "alpha_over_r": alpha / r if r and alpha else None, "scale": scale,
            "targets": hp.get("targets")}


def run_row(name: str, hp: dict, train_stats: dict, metrics: dict, merge_check: dict | None, best_metric: str = "rougeL") -> dict:
    """`merge_check` is None for a run with nothing merged (full fine-tuning, or merges not requested)."""
    merge = {"merge_check": "n/a"} if merge_check is None else {
        "merge_max_abs_diff": merge_check["max_abs_logit_diff"], "merge_check": "pass" if merge_check["passed"] else "FAIL",
        **{k: merge_check.get(k) for k in SPEED_KEYS}}
    return {
        **grid_columns(name, hp), "status": "ok", "trainable_params": train_stats["trainable_params"], "trainable_pct": train_stats["trainable_pct"],
        "adapter_mb": train_stats["adapter_mb"], "optimizer": train_stats.get("optimizer"), "train_time_s": train_stats["train_time_s"],
        "peak_memory_mb": train_stats["peak_memory_mb"], "final_train_loss": train_stats["final_train_loss"],
        "val_loss": train_stats.get("best_eval_loss"), **eval_columns(metrics), **val_columns(metrics, best_metric), **merge,
    }


def rank_columns(summary: dict | None) -> dict:
    """eff_rank: the largest effective rank over modules at the highest configured energy (rank_analysis);
    suggested_r: the smallest power of two holding it; intruders: intruder dimensions over all modules
    (when the rank analysis had the base model's weights)."""
    if summary is None:
        return {}
    top = max(summary["energies"])
    label = f"{100 * top:g}"
    return {"eff_rank": summary[f"eff_rank_{label}_max"], "suggested_r": summary["suggested_r"],
            **({"intruders": summary["intruders_total"]} if summary.get("intruder_modules_analysed") else {})}


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
    raise ValueError(f"cannot match {len(paths)} files to runs {list(names)}: put them under runs/<run>/ or pass {{run: path}}")


# --- selection ---------------------------------------------------------------------------------------


def choose_best(df: pd.DataFrame, best_metric: str) -> tuple[int | None, str]:
    """Index of the best finished run by the metric on validation, and where the choice came from.
    Falls back to the validation loss of training for the loss metrics; without any validation figure
    the test split has to choose, and the label says so."""
    runs = df[(df["run"] != "base") & (df["status"] == "ok")]
    lower = lower_is_better(metric_column(best_metric))
    for column, source in (("val_metric", "validation"), ("val_loss", "validation loss") if lower else (None, None),
                           (metric_column(best_metric), "test (no validation scores)")):
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


# --- per-row scores and the bootstrap -----------------------------------------------------------------


def _score_lines(path: str | None) -> list[dict]:
    return read_jsonl(path) if path and Path(path).is_file() else []


def _stats_matrix(lines: dict[str, dict], ids: list[str], metric: str) -> np.ndarray:
    """(n, k) per-row sufficient statistics of `metric` on rows `ids` (see loraflow.report.stats)."""
    if metric in ("test_loss", "perplexity"):
        return np.array([[lines[i]["loss_sum"], lines[i]["tokens"]] for i in ids], dtype=np.float64).reshape(len(ids), 2)
    if metric == "bleu":
        return np.array([lines[i]["bleu_stats"] for i in ids], dtype=np.float64)
    key = "correct" if metric == "retention" else metric
    return np.array([[lines[i][key], 1.0] if lines[i].get(key) is not None else [0.0, 0.0] for i in ids], dtype=np.float64).reshape(len(ids), 2)


def _metric(metric: str) -> st.Metric:
    return {"test_loss": st.LOSS, "perplexity": st.PERPLEXITY, "bleu": st.BLEU}.get(metric) or st.mean_metric(metric)


class Bootstrap:
    """Paired replicates of every metric of every system (runs and `base`) on shared rows of one split
    (`test` by default; `val` for choosing on validation). `groups` ({row id: group}) switches to the
    clustered bootstrap when every shared row has a group. Retention is measured on the items the base
    answers correctly, per part: `retention` on the test part, `val_retention` on the validation part."""

    def __init__(self, scores: dict[str, str], n_resamples: int = 1000, seed: int = 42, confidence: float = 0.95,
                 groups: dict[str, str] | None = None, split: str = "test"):
        self.n, self.seed, self.confidence, self.split = n_resamples, seed, confidence, split
        self.groups = groups or {}
        self.group_key: str | None = None  # the row field the groups come from (for the report)
        self.lines = {name: _score_lines(p) for name, p in scores.items()}
        self.lines = {k: v for k, v in self.lines.items() if v}
        rows = lambda name, s: {r["id"]: r for r in self.lines[name] if r.get("split", "test") == s}  # noqa: E731
        self.test = {name: rows(name, split) for name in self.lines}
        self.retention = {name: rows(name, "retention") for name in self.lines}
        systems = [name for name in self.test if self.test[name]]
        common = set.intersection(*(set(self.test[s]) for s in systems)) if systems else set()
        order = [i for i in self.test[systems[0]] if i in common] if systems else []  # stable: the first system's row order
        self.loss_ids = [i for i in order if all("loss_sum" in self.test[s][i] for s in systems)]
        self.gen_ids = [i for i in order if all("rougeL" in self.test[s][i] for s in systems)]
        self.cache: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
        self._counts: dict[tuple[str, ...], np.ndarray] = {}

    def clustered(self, ids: list[str]) -> bool:
        return bool(ids) and bool(self.groups) and all(i in self.groups for i in ids)

    def counts(self, ids: list[str]) -> np.ndarray:
        """(B, len(ids)) multiplicities, the same for every system (paired): whole groups resampled when clustered."""
        key = tuple(ids)
        if key not in self._counts:
            self._counts[key] = (st.cluster_counts([self.groups[i] for i in ids], self.n, self.seed) if self.clustered(ids)
                                 else st.resample_counts(len(ids), self.n, self.seed))
        return self._counts[key]

    def ids(self, metric: str) -> list[str]:
        return self.loss_ids if metric in ("test_loss", "perplexity") else self.gen_ids

    def has(self, name: str, metric: str) -> bool:
        if metric in RETENTION_PARTS:
            return bool(self.retention.get(name))
        key = {"test_loss": "loss_sum", "perplexity": "loss_sum", "bleu": "bleu_stats"}.get(metric, metric)
        ids = self.ids(metric)
        return bool(self.test.get(name)) and bool(ids) and all(i in self.test[name] for i in ids) and any(self.test[name][i].get(key) is not None for i in ids)

    def row_stats(self, name: str, metric: str) -> tuple[list[str], np.ndarray] | None:
        """(row ids, (n, k) per-row sufficient statistics) of `metric` for system `name`; None without scores."""
        if not self.has(name, metric):
            return None
        if metric in RETENTION_PARTS:
            ids = self.retention_ids(name, RETENTION_PARTS[metric])
            return (ids, _stats_matrix(self.retention[name], ids, "retention")) if ids else None
        ids = self.ids(metric)
        stats = _stats_matrix(self.test[name], ids, metric)
        if metric != "bleu" and stats[:, -1].sum() == 0:
            return None
        return ids, stats

    def reps(self, name: str, metric: str) -> tuple[float, np.ndarray] | None:
        """(point estimate, replicates) of `metric` for system `name`; None when it has no such scores."""
        key = (name, metric)
        if key not in self.cache:
            found = self.row_stats(name, metric)
            if found is None:
                return None
            ids, stats = found
            if metric in RETENTION_PARTS:  # each run is asked its own items: its own (seeded) resample of them
                counts = st.resample_counts(len(ids), self.n, self.seed)
                self.cache[key] = st.replicates(st.mean_metric("retention"), stats, counts)
            else:
                self.cache[key] = st.replicates(_metric(metric), stats, self.counts(ids))
        return self.cache[key]

    def retention_ids(self, name: str, part: str | None = "test") -> list[str]:
        """The items a run was asked: those the base answered correctly, in `part` (val, test; None = both)."""
        base = self.retention.get("base", {})
        correct = [i for i, r in base.items() if r.get("correct")]
        if name != "base":
            own = self.retention.get(name, {})
            correct = [i for i in correct if i in own] if base else list(own)
        lines = {**base, **self.retention.get(name, {})}
        return [i for i in correct if part is None or item_part(lines[i]) == part]

    def compare(self, a: str, b: str, metric: str) -> st.Comparison | None:
        ra, rb = self.reps(a, metric), self.reps(b, metric)
        if ra is None or rb is None:
            return None
        return st.compare(ra, rb, self.confidence)


RETENTION_PARTS = {"retention": "test", "val_retention": "val"}


def item_part(line: dict) -> str:
    """The part (val, test) of a retention line: as the evaluate stage wrote it, else from its id."""
    return line.get("part") or retention_part(line["id"])


def add_intervals(df: pd.DataFrame, boot: Bootstrap, best_metric: str) -> pd.DataFrame:
    """CI columns for every test metric, differences to base and best for the selection metric,
    `tied for best` marks, and retention against base."""
    metric = metric_column(best_metric)
    ok = df["status"] == "ok"
    if "tied" not in df:
        df.insert(df.columns.get_loc("best") + 1, "tied", "")
    for m in CI_METRICS:
        if m not in df:
            continue
        for idx in df.index[ok]:
            r = boot.reps(df.at[idx, "run"], m)
            if r is not None:
                df.loc[idx, [f"{m}_lo", f"{m}_hi"]] = st.interval(r[1], boot.confidence)
    best = df.index[df["best"] != ""]
    best_run = df.at[best[0], "run"] if len(best) else None
    lower = lower_is_better(metric)
    for idx in df.index[ok & (df["run"] != "base")]:
        name = df.at[idx, "run"]
        c = boot.compare(name, "base", metric)
        if c is not None:
            df.loc[idx, ["vs_base", "vs_base_lo", "vs_base_hi", "vs_base_p"]] = [c.diff, c.lo, c.hi, c.p]
        if best_run is None or name == best_run:
            continue
        c = boot.compare(name, best_run, metric)
        if c is not None:
            df.loc[idx, ["vs_best", "vs_best_lo", "vs_best_hi", "vs_best_p"]] = [c.diff, c.lo, c.hi, c.p]
            worse = c.hi < 0 if not lower else c.lo > 0
            if not worse and df.get("floor", pd.Series("", index=df.index)).get(idx) != "below floor":  # rejected for forgetting
                df.loc[idx, "tied"] = "tied for best"
    add_retention(df, boot)
    return df


def add_retention(df: pd.DataFrame, boot: Bootstrap) -> pd.DataFrame:
    """Retention of every finished run with intervals and its change against the base: `retention` on
    the test part of the retention set (reported), `val_retention` on the validation part (may choose)."""
    for metric, part in RETENTION_PARTS.items():
        base = boot.reps("base", metric)
        if base is None:
            continue
        for idx in df.index[df["status"] == "ok"]:
            name = df.at[idx, "run"]
            r = boot.reps(name, metric)
            if r is None:
                continue
            lo, hi = st.interval(r[1], boot.confidence)
            df.loc[idx, [metric, f"{metric}_lo", f"{metric}_hi", f"{metric}_items"]] = [r[0], lo, hi, len(boot.retention_ids(name, part))]
            if name != "base" and part == "test":
                c = st.compare(r, (base[0], np.full(boot.n, base[0])), boot.confidence)
                df.loc[idx, ["d_retention", "d_retention_lo", "d_retention_hi", "d_retention_p"]] = [c.diff, c.lo, c.hi, c.p]
    return df


# --- seeds, main effects ------------------------------------------------------------------------------


def point_axes(df: pd.DataFrame) -> dict[str, dict]:
    """Grid point -> {axis: level} for finished runs (levels as in the table); runs derived from another
    run's adapter (`<run>_ri`, method `...+ri`) are not grid points."""
    runs = df[(df["run"] != "base") & (df["status"] == "ok")]
    if "method" in runs:
        runs = runs[~runs["method"].fillna("").astype(str).str.endswith("+ri")]
    out = {}
    for point, g in runs.groupby("point" if "point" in runs else "run", sort=False):
        first = g.iloc[0]
        out[point] = {axis: (None if pd.isna(first[col]) else first[col]) for axis, col in AXES.items() if col in g}
    return out


def point_replicates(df: pd.DataFrame, boot: Bootstrap | None, metric: str) -> dict[str, tuple[float, np.ndarray]]:
    """Grid point -> (mean over its seeds, two-level replicates: rows, then seeds)."""
    if boot is None:
        return {}
    runs = df[(df["run"] != "base") & (df["status"] == "ok")]
    out = {}
    for point, g in runs.groupby("point" if "point" in runs else "run", sort=False):
        reps = [boot.reps(name, metric) for name in g["run"]]
        reps = [r for r in reps if r is not None]
        if reps:
            out[point] = st.seed_average(reps, boot.n, boot.seed)
    return out


def by_point(df: pd.DataFrame, best_metric: str, boot: Bootstrap | None = None) -> pd.DataFrame | None:
    """Mean, std and a t-interval over seeds per grid point, a two-level bootstrap interval (rows and
    seeds) of the selection metric, the best point by mean validation metric and the points tied with
    it (None when every point has a single seed)."""
    runs = df[(df["run"] != "base") & (df["status"] == "ok")]
    if "point" not in runs or not len(runs) or runs.groupby("point").size().max() < 2:
        return None
    metrics = [c for c in POINT_METRICS if c in runs and runs[c].notna().any()]
    grouped = runs.groupby("point", sort=False)
    out = grouped[[c for c in ("method", "r", "alpha", "lr", "scale", "targets", "trainable_params") if c in runs]].first()
    out.insert(0, "seeds", grouped.size())
    for c in metrics:
        out[f"{c}_mean"] = grouped[c].mean()
        out[f"{c}_std"] = grouped[c].std(ddof=1)
        ci = grouped[c].apply(lambda s: st.t_interval(list(s)))
        out[f"{c}_seed_lo"], out[f"{c}_seed_hi"] = [v[0] for v in ci], [v[1] for v in ci]
    metric = metric_column(best_metric)
    select = "val_metric_mean" if "val_metric_mean" in out and out["val_metric_mean"].notna().any() else f"{metric}_mean"
    lower = lower_is_better(metric)
    out["best"], out["tied"] = "", ""
    best = out[select].idxmin() if lower else out[select].idxmax()
    out.loc[best, "best"] = f"best mean ({best_metric})"
    reps = point_replicates(df, boot, metric)
    for point, r in reps.items():
        out.loc[point, [f"{metric}_lo", f"{metric}_hi"]] = st.interval(r[1], boot.confidence)
        if point != best and best in reps:
            c = st.compare(r, reps[best], boot.confidence)
            out.loc[point, ["vs_best", "vs_best_lo", "vs_best_hi", "vs_best_p"]] = [c.diff, c.lo, c.hi, c.p]
            if not (c.hi < 0 if not lower else c.lo > 0):
                out.loc[point, "tied"] = "tied for best"
    out = out.reset_index()
    out.attrs["best_source"] = "validation" if select.startswith("val_") else "test (no validation scores)"
    return out


def effects_table(df: pd.DataFrame, boot: Bootstrap | None, best_metric: str) -> pd.DataFrame:
    """Main effects of every grid axis on the selection metric (test) and on retention, plus the r x
    alpha interaction contrast; one row per axis level (and per interaction)."""
    if boot is None:
        return pd.DataFrame()
    points = point_axes(df)
    rows = []
    for metric in dict.fromkeys([metric_column(best_metric), "retention"]):
        reps = point_replicates(df, boot, metric)
        if len(reps) < 2:
            continue
        for row in st.main_effects(points, list(AXES), reps, boot.confidence):
            rows.append({"metric": metric, **row})
        inter = st.interaction(points, reps, "r", "alpha", boot.confidence)
        if inter:
            a0, a1 = _lvl(inter["a_levels"][0]), _lvl(inter["a_levels"][1])
            b0, b1 = _lvl(inter["b_levels"][0]), _lvl(inter["b_levels"][1])
            rows.append({"metric": metric, "axis": "r x alpha", "level": f"(r{a1} - r{a0}) at alpha {b1} minus at alpha {b0}",
                         "vs": "", "effect": inter["contrast"],
                         "effect_lo": inter["lo"], "effect_hi": inter["hi"], "p": inter["p"]})
    return pd.DataFrame(rows)


def _lvl(v) -> str:
    if isinstance(v, str):  # levels read back from comparison_effects.csv
        try:
            v = float(v)
        except ValueError:
            return v
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _num(x: float, decimals: int = 1, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return (f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}").replace("-", "−")


def _p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def effects_line(effects: pd.DataFrame, metric: str) -> str:
    """'alpha 16→32: +4.9 ROUGE-L [4.1, 5.7]; r 4→16: +0.2 [−0.6, 1.0]' for `metric`."""
    if effects is None or not len(effects):
        return ""
    rows = effects[(effects["metric"] == metric) & effects["effect"].notna()]
    main = rows[rows["axis"] != "r x alpha"]
    rows = pd.concat([main.reindex(main["effect"].abs().sort_values(ascending=False).index), rows[rows["axis"] == "r x alpha"]])  # biggest first
    parts, first = [], True
    dec = 3 if lower_is_better(metric) else 1
    for r in rows.itertuples():
        if r.axis == "r x alpha":
            text = f"r × alpha interaction: {_num(r.effect, dec, True)} [{_num(r.effect_lo, dec)}, {_num(r.effect_hi, dec)}]"
        else:
            unit = f" {LABEL.get(metric, metric)}" if first else ""
            text = f"{r.axis} {_lvl(r.vs)}→{_lvl(r.level)}: {_num(r.effect, dec, True)}{unit} [{_num(r.effect_lo, dec)}, {_num(r.effect_hi, dec)}]"
            first = False
        parts.append(f"{text} ({_p(r.p)})")
    return "; ".join(parts)


# --- markdown -----------------------------------------------------------------------------------------


def _fmt(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "trainable_params":
        return f"{int(value):,}"
    if column in ("r", "seed", "suggested_r", "retention_items", "val_retention_items"):
        return str(int(value))
    if column in ("alpha", "lr"):
        return f"{value:g}"
    if column in ("merge_max_abs_diff",) or column.endswith("_p"):
        return f"{value:.2g}"
    if isinstance(value, float):
        return f"{value:.{DECIMALS.get(column, 2)}f}"
    return str(value)


def with_ci(df: pd.DataFrame, column: str, decimals: int | None = None) -> list[str]:
    """'52.57 [50.10, 55.02]' per row (the value alone when there is no interval)."""
    out = []
    dec = decimals if decimals is not None else DECIMALS.get(column, 2)
    for _, row in df.iterrows():
        v = row.get(column)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append("")
            continue
        lo, hi = row.get(f"{column}_lo"), row.get(f"{column}_hi")
        if lo is None or pd.isna(lo):
            out.append(f"{v:.{dec}f}")
        else:
            out.append(f"{v:.{dec}f} [{lo:.{dec}f}, {hi:.{dec}f}]")
    return out


def diff_cells(df: pd.DataFrame, prefix: str, decimals: int = 2) -> list[str]:
    out = []
    for _, row in df.iterrows():
        d = row.get(prefix)
        if d is None or pd.isna(d):
            out.append("")
        else:
            out.append(f"{d:+.{decimals}f} [{row[prefix + '_lo']:.{decimals}f}, {row[prefix + '_hi']:.{decimals}f}], {_p(row[prefix + '_p'])}")
    return out


def to_markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |",
             "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row[c], c) for c in df.columns) + " |" for _, row in df.iterrows()]
    return "\n".join(lines) + "\n"


def cells_markdown(head: list[str], columns: list[list[str]], right_from: int = 1) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * right_from + ["---:"] * (len(head) - right_from)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in zip(*columns)]
    return "\n".join(lines) + "\n"


def grid_markdown(df: pd.DataFrame) -> str:
    cols = [c for c in ("run", "status", "seed", "method", "r", "alpha", "lr", "alpha_over_r", "scale", "targets", "precision") if c in df]
    return to_markdown(df[cols])


def marks(df: pd.DataFrame) -> list[str]:
    """The `best` cell of a Markdown row: the chosen run, or tied for best."""
    tied = df["tied"].fillna("") if "tied" in df else pd.Series("", index=df.index)
    return [b if b else t for b, t in zip(df["best"].fillna(""), tied)]


def quality_markdown(df: pd.DataFrame, best_metric: str) -> str:
    """Test metrics (held out) with intervals, and the differences of the selection metric."""
    metrics = [c for c in ("test_loss", "perplexity", *EVAL_KEYS, *OPTIONAL_EVAL_KEYS) if c in df and df[c].notna().any()]
    head, cols = ["run", "best"], [list(df["run"]), marks(df)]
    for m in metrics:
        head.append(m)
        cols.append(with_ci(df, m))
    return cells_markdown(head, cols, 2)


def comparisons_markdown(df: pd.DataFrame, best_metric: str) -> str:
    metric = metric_column(best_metric)
    runs = df[df["run"] != "base"]
    dec = 4 if lower_is_better(metric) else 2
    head = ["run", "best", f"val {LABEL.get(best_metric, best_metric)}", "val_loss", f"test {LABEL.get(metric, metric)}", "vs base", "vs best"]
    cols = [list(runs["run"]), marks(runs), [_fmt(v, "val_loss" if lower_is_better(metric) else "x") for v in runs.get("val_metric", [None] * len(runs))],
            [_fmt(v, "val_loss") for v in runs.get("val_loss", [None] * len(runs))], with_ci(runs, metric, dec),
            diff_cells(runs, "vs_base", dec), diff_cells(runs, "vs_best", dec)]
    if "val_retention" in runs and runs["val_retention"].notna().any():
        head.insert(4, "val retention")
        cols.insert(4, [_fmt(v, "x") for v in runs["val_retention"]])
    if "p_best" in runs and runs["p_best"].notna().any():
        head.append("P(best), test")
        cols.append([_fmt(v, "x") for v in runs["p_best"]])
    if best_metric == "eval_loss":  # the selection metric is the validation loss: one column
        del head[3], cols[3]
    return cells_markdown(head, cols, 2)


def retention_markdown(df: pd.DataFrame) -> str:
    """Retention on the test part (reported) and on the validation part (may choose, table.retention_floor)."""
    head = ["run", "retention (test part)", "Δ retention vs base", "items"]
    cols = [list(df["run"]), with_ci(df, "retention", 1), diff_cells(df, "d_retention", 1),
            [_fmt(v, "retention_items") for v in df.get("retention_items", [None] * len(df))]]
    if "val_retention" in df and df["val_retention"].notna().any():
        head += ["val retention (chooses)", "val items"]
        cols += [with_ci(df, "val_retention", 1), [_fmt(v, "retention_items") for v in df.get("val_retention_items", [None] * len(df))]]
    return cells_markdown(head, cols, 1)


COST = ["run", "trainable_params", "trainable_pct", "adapter_mb", "optimizer", "r", "eff_rank", "suggested_r", "intruders", "train_time_s", "peak_memory_mb", "final_train_loss",
        "merge_max_abs_diff", "merge_check", *SPEED_KEYS]


def points_markdown(points: pd.DataFrame, best_metric: str = "rougeL") -> str:
    metrics = [c.removesuffix("_mean") for c in points.columns if c.endswith("_mean")]
    metric = metric_column(best_metric)
    head = ["point", "best", "seeds", "r", "alpha", "targets", *metrics]
    if f"{metric}_lo" in points:
        head.append(f"{metric} 95 % CI (rows + seeds)")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for _, row in points.iterrows():
        cells = [row["point"], row["best"] or row.get("tied", "") or "", str(row["seeds"]), _fmt(row["r"], "r"), _fmt(row["alpha"], "alpha"), str(row["targets"])]
        cells += [f"{row[m + '_mean']:.{DECIMALS.get(m, 2)}f} ± {row[m + '_std']:.{DECIMALS.get(m, 2)}f}" for m in metrics]
        if f"{metric}_lo" in points:
            cells.append("" if pd.isna(row[f"{metric}_lo"]) else f"[{row[f'{metric}_lo']:.2f}, {row[f'{metric}_hi']:.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline(df: pd.DataFrame, best_metric: str, boot: Bootstrap | None, effects: pd.DataFrame, points: pd.DataFrame | None,
             notes: dict[str, list[str]] | None = None) -> str:
    """The answer first: the chosen run and how sure we are, the tied set, which knob mattered, what it cost.
    `notes`: sentences on the forgetting-aware choice (`choice`) and on certainty (`sure`)."""
    notes = notes or {}
    metric = metric_column(best_metric)
    lower = lower_is_better(metric)
    dec = 4 if lower else 2
    best = df[df["best"].fillna("").str.startswith("best")]
    pruned = df[df["status"].fillna("").str.startswith("pruned")]
    failed = df[(df["status"] != "ok") & ~df.index.isin(pruned.index)]
    lines = []
    if not len(best):
        lines.append("No run finished.")
    else:
        b = best.iloc[0]
        source = df.attrs.get("best_source", "validation")
        lines.append(f"Best run by `{best_metric}`: **{b['run']}** (chosen on {source}).")
        ci = f" [{b[f'{metric}_lo']:.{dec}f}, {b[f'{metric}_hi']:.{dec}f}]" if f"{metric}_lo" in b and not pd.isna(b.get(f"{metric}_lo")) else ""
        text = f"Held-out test {LABEL.get(metric, metric)}: {b[metric]:.{dec}f}{ci}"
        if "vs_base" in b and not pd.isna(b.get("vs_base")):
            text += f", {b['vs_base']:+.{dec}f} [{b['vs_base_lo']:.{dec}f}, {b['vs_base_hi']:.{dec}f}] against the base model ({_p(b['vs_base_p'])})"
        for extra in ("fact_acc", "answer_ok"):
            if extra != metric and extra in b and not pd.isna(b.get(extra)):
                ci_x = f" [{b[extra + '_lo']:.1f}, {b[extra + '_hi']:.1f}]" if f"{extra}_lo" in b and not pd.isna(b.get(f"{extra}_lo")) else ""
                base_x = df.loc[df["run"] == "base", extra]
                text += (f"; it states the right facts in {b[extra]:.1f} %{ci_x} of its answers" if extra == "fact_acc"
                         else f"; answer check {b[extra]:.1f} %{ci_x}") + (f" (base {base_x.iloc[0]:.1f} %)" if len(base_x) and not pd.isna(base_x.iloc[0]) else "")
        lines.append(text + ".")
        lines += notes.get("choice", [])
        if boot is not None:
            tied = df[df.get("tied", pd.Series("", index=df.index)) == "tied for best"]
            ids = boot.loss_ids if lower else boot.gen_ids
            rows = (f"clustered paired bootstrap over the {len(ids)} test rows in {len({boot.groups[i] for i in ids})} groups "
                    f"(table.cluster_by: {boot.group_key})" if boot.clustered(ids) else f"paired bootstrap over the {len(ids)} test rows")
            desc = f"{rows}, {boot.n:,} resamples, {100 * boot.confidence:g} % intervals, seed {boot.seed}"
            if len(tied):
                items = ", ".join(f"{r.run} ({r.vs_best:+.{dec}f} [{r.vs_best_lo:.{dec}f}, {r.vs_best_hi:.{dec}f}], {_p(r.vs_best_p)})" for r in tied.itertuples())
                lines.append(f"**Tied for best** (not significantly worse than {b['run']} on the test rows; {desc}): {items}. "
                             f"The data cannot separate these runs: treat the best as this set.")
            elif len(df[(df["status"] == "ok") & (df["run"] != "base")]) > 1:
                lines.append(f"Every other run is significantly worse than {b['run']} on the test rows ({desc}).")
            better = (df[(df.get("tied", pd.Series("", index=df.index)) == "tied for best") & ((df["vs_best_lo"] > 0) if not lower else (df["vs_best_hi"] < 0))]
                      if "vs_best_lo" in df else df.iloc[0:0])  # one finished run: nothing to compare it with
            if len(better):
                lines.append(f"Note: {', '.join(better['run'])} did significantly better on test than the run validation chose.")
    lines += [line for line in notes.get("sure", []) if line]
    if points is not None and len(points):
        bp = points[points["best"].str.startswith("best")]
        if len(bp):
            tied = points[points.get("tied", pd.Series("", index=points.index)) == "tied for best"]["point"].tolist()
            lines.append(f"Across seeds, the best grid point by mean `{best_metric}` (on {points.attrs.get('best_source', 'validation')}) is **{bp.iloc[0]['point']}**"
                         + (f"; tied with it: {', '.join(tied)}." if tied else "."))
    line = effects_line(effects, metric)
    if line:
        lines.append(f"**Which knob mattered** (main effects on test {LABEL.get(metric, metric)}, mean over the other axes): {line}.")
    base_acc = df.loc[df["run"] == "base", "retention_base_acc"] if "retention_base_acc" in df else pd.Series(dtype=float)
    if len(base_acc) and base_acc.iloc[0] == 0:
        lines.append("**What it cost**: the base model answers none of the retention questions correctly, so there is nothing "
                     "it could forget (a larger base model, or evaluate.lm_eval_tasks, measures general ability instead).")
    if "retention" in df and df["retention"].notna().any() and "d_retention" in df:
        runs = df[(df["run"] != "base") & df["d_retention"].notna()]
        if len(runs):
            items = int(df.loc[df["run"] == "base", "retention_items"].iloc[0]) if "retention_items" in df and df.loc[df["run"] == "base", "retention_items"].notna().any() else None
            worst = runs.loc[runs["d_retention"].idxmin()]
            best_row = df[df["best"].fillna("").str.startswith("best")]
            cost = ""
            if len(best_row) and not pd.isna(best_row.iloc[0].get("d_retention")):
                r = best_row.iloc[0]
                cost = f"the best run keeps {r['retention']:.1f} % ({r['d_retention']:+.1f} [{r['d_retention_lo']:.1f}, {r['d_retention_hi']:.1f}]); "
            lines.append(f"**What it cost**: retention on the {items if items is not None else ''} built-in general questions the base "
                         f"model answers correctly (test part of the set): {cost}the largest loss is {worst['run']} ({worst['d_retention']:+.1f} "
                         f"[{worst['d_retention_lo']:.1f}, {worst['d_retention_hi']:.1f}]).")
        line = effects_line(effects, "retention")
        if line:
            lines.append(f"Main effects on retention: {line}.")
    if len(pruned):
        lines.append(f"**Successive halving** stopped {len(pruned)} of {len(df) - 1} runs early on their validation loss "
                     f"(status `pruned at step N`, validation figures at that step, no test figures): {', '.join(pruned['run'])}. "
                     "The best was chosen among the runs that trained to the end.")
    if len(failed):
        lines.append(f"{len(failed)} run(s) did not finish: " + ", ".join(failed["run"]) + ".")
    return "\n\n".join(lines)


def lr_note(df: pd.DataFrame) -> str:
    runs = df[(df["run"] != "base") & df["r"].notna()] if "r" in df else df.iloc[0:0]
    if not len(runs) or runs["r"].nunique() < 2 and runs["alpha"].nunique() < 2:
        return ""
    lrs = runs["lr"].dropna().unique() if "lr" in runs else []
    text = ("`scale` is the factor LoRA multiplies its update by: alpha/r, or alpha/√r for rsLoRA. With Adam, the size of each "
            "step of A and B does not depend on that factor, so the update the model sees grows with it: at a fixed learning rate an "
            "r × alpha grid mostly sweeps the effective learning rate (rows with the same `scale` differ little; see the main effects). "
            "Sweep `grid.learning_rate` first, then r; r matters less than expected until capacity binds "
            "(Schulman et al., *LoRA Without Regret*, 2025; Kalajdzievski, *rsLoRA*, 2023).")
    if len(lrs) <= 1:
        text += " This grid has a single learning rate."
    return text + "\n"


def write_tables(df: pd.DataFrame, out_csv: str, out_md: str, best_metric: str, out_points_csv: str | None = None,
                 boot: Bootstrap | None = None, out_effects_csv: str | None = None) -> str:
    methods = methods_table(df, best_metric, boot)  # flags each method's best-rate run (column method_best)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    points = by_point(df, best_metric, boot)
    metric = metric_column(best_metric)
    power = certainty.power_summary(df, boot, metric) if boot is not None else None
    said = {"choice": selection_lines(df, best_metric),
             "sure": certainty.certainty_lines(df, power, LABEL.get(metric, metric), boot.n if boot is not None else 0)}
    if len(methods):
        said["sure"].append(methods_line(methods))
    if out_points_csv:
        with atomic_path(out_points_csv) as tmp:
            (points if points is not None else pd.DataFrame()).to_csv(tmp, index=False)
    effects = effects_table(df, boot, best_metric)
    if out_effects_csv:
        with atomic_path(out_effects_csv) as tmp:
            effects.to_csv(tmp, index=False)
    cost = df[df["run"] != "base"][[c for c in COST if c in df]]
    notes = ""
    if "eff_rank" in df:
        notes = ("\n`eff_rank`: the largest effective rank of any learned ΔW (rank holding the top configured share of its "
                 "energy, see `runs/<run>/rank_analysis.png`); `suggested_r`: the smallest power of two that holds it.\n")
        smaller = df[(df["run"] != "base") & df["suggested_r"].notna() & (df["suggested_r"] < df["r"])]
        if len(smaller):
            notes += "A smaller r would have sufficed for: " + ", ".join(f"{r.run} (r={int(r.r)} → {int(r.suggested_r)})" for r in smaller.itertuples()) + ".\n"
    if "intruders" in df:
        notes += ("`intruders`: singular vectors among the top ones of each tuned weight W + ΔW that resemble none of the base "
                  "weight's (intruder dimensions, which go with forgetting; per module in `runs/<run>/rank_analysis.csv`); "
                  "`<run>_ri` rows are the same adapters after peft's reduce_intruder_dimension (config `reduce_intruders`).\n")
    ci_note = ("Test figures are held out: they choose nothing. Brackets are 95 % paired-bootstrap intervals over test rows; "
               "`vs base` / `vs best` are paired differences with their interval and two-sided bootstrap p-value; "
               "`tied for best` = not significantly worse than the best run (differences are not corrected for multiple comparisons).\n"
               if boot is not None else "Test figures are held out: they choose nothing. (No per-row scores: no intervals.)\n")
    md = (f"# LoRA comparison\n\n{headline(df, best_metric, boot, effects, points, said)}\n\n"
          f"The `base` row is the untouched base model. Every column is in `comparison.csv`.\n\n"
          f"## Selection (validation) and differences (test)\n\n{comparisons_markdown(df, best_metric)}"
          f"\n## Quality (test split, held out)\n\n{ci_note}\n{quality_markdown(df, best_metric)}")
    if "retention" in df and df["retention"].notna().any():
        acc = df.loc[df["run"] == "base", "retention_base_acc"].iloc[0] if "retention_base_acc" in df else math.nan
        md += ("\n## Retention (what tuning cost)\n\nShare of the built-in general questions (arithmetic, unit conversion, world "
               "facts, simple instructions; English and Chinese) that the base model answers correctly which the run still answers "
               f"correctly. The base is 100 by construction (it answers {acc:.1f} % of all the items it was asked).\n\n" + retention_markdown(df))
    pareto = pareto_markdown(df, best_metric)
    if pareto:
        md += "\n## Learned vs forgotten (Pareto set, validation)\n\n" + pareto
    if len(methods):
        md += "\n## Methods at their best rate\n\n" + methods_markdown(methods, best_metric)
    if len(effects):
        md += "\n## Which knob mattered (main effects, test)\n\n" + effects_markdown(effects)
    lm = [c for c in df.columns if c.startswith("lm_") and not c.endswith("_vs_base")]
    if lm:
        md += ("\n## lm-eval-harness (general benchmarks)\n\n"
               + to_markdown(df[["run", *[c for c in df.columns if c.startswith("lm_")]]]))
    md += f"\n## Grid\n\n{lr_note(df)}\n{grid_markdown(df)}\n## Cost\n\n{to_markdown(cost)}{notes}"
    if points is not None:
        best_point = points.loc[points["best"].str.startswith("best"), "point"].iloc[0]
        md += (f"\n## Across seeds (mean ± std)\n\nBest grid point by mean `{best_metric}`: **{best_point}** "
               f"(chosen on {points.attrs.get('best_source', 'validation')}). "
               f"Intervals carry the variance across seeds and across test rows.\n\n{points_markdown(points, best_metric)}")
    write_text(out_md, md)
    print(md, flush=True)
    return md


def effects_markdown(effects: pd.DataFrame) -> str:
    head = ["metric", "axis", "level", "points", "marginal mean", "effect vs first level", "p"]
    cols = [[] for _ in head]
    for r in effects.itertuples():
        dec = 4 if lower_is_better(r.metric) else 2
        mean = "" if pd.isna(getattr(r, "mean", math.nan)) else f"{r.mean:.{dec}f} [{r.mean_lo:.{dec}f}, {r.mean_hi:.{dec}f}]"
        vs = "" if pd.isna(r.vs) or r.vs == "" else f" vs {_lvl(r.vs)}"
        effect = "" if pd.isna(r.effect) else f"{r.effect:+.{dec}f} [{r.effect_lo:.{dec}f}, {r.effect_hi:.{dec}f}]{vs}"
        points = "" if pd.isna(getattr(r, "points", math.nan)) else str(int(r.points))
        for c, v in zip(cols, (r.metric, r.axis, _lvl(r.level), points, mean, effect, "" if pd.isna(r.p) else _fmt(r.p, "p_p"))):
            c.append(v)
    return cells_markdown(head, cols, 3)


# --- entry points ---------------------------------------------------------------------------------------


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



def build_table(base_metrics: str, train_stats, metrics, merge_checks=(), runs: dict[str, dict] | None = None,
                best_metric: str = "rougeL", rank_summaries=(), pruned: list[dict] = ()) -> pd.DataFrame:
    """One row per run of `runs` (run name -> grid hyperparameters) plus the base row, best run marked.
    Per-run files are matched by run name (see `by_run`); merge checks and rank summaries are optional
    (runs without one get `merge_check` n/a)."""
    names = list(runs)
    stats, evals = by_run(train_stats, names), by_run(metrics, names)
    merged, ranks = by_run(merge_checks), by_run(rank_summaries)
    rows = [{"run": "base", "status": "ok", **eval_columns(read_json(base_metrics))}]
    for name, hp in runs.items():
        if name not in stats or name not in evals:
            raise ValueError(f"run {name}: no train_stats.json / eval.json among the inputs")
        row = run_row(name, hp, read_json(stats[name]), read_json(evals[name]), read_json(merged[name]) if name in merged else None, best_metric)
        rows.append({**row, **rank_columns(read_json(ranks[name]) if name in ranks else None)})
    return finish([*rows, *pruned], best_metric)  # pruned: rows of points successive halving stopped (report/halving.py)


def finish(rows: list[dict], best_metric: str) -> pd.DataFrame:
    """Columns in order; optional columns nobody filled are dropped; the best run marked."""
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    runs = df[df["run"] != "base"]
    drop = [c for c in (*OPTIONAL_EVAL_KEYS, "eff_rank", "suggested_r", "intruders", "precision", "retention", "val_retention", "retention_base_acc", "val_metric", "lr", "scale") if df[c].isna().all()]
    if (runs["point"].isna() | (runs["point"] == runs["run"])).all():
        drop.append("point")  # no seeds axis: the point is the run
    if runs["seed"].nunique() <= 1:
        drop.append("seed")
    if (runs["method"].fillna("lora") == "lora").all():
        drop.append("method")
    return mark_best(df.drop(columns=drop), best_metric)


def write_comparison(
    base_metrics: str, train_stats, metrics, merge_checks=(), out_csv: str = "", out_md: str = "", runs: dict[str, dict] | None = None,
    best_metric: str = "rougeL", out_points_csv: str | None = None, rank_summaries=(), scores=(), base_scores: str | None = None,
    out_effects_csv: str | None = None, bootstrap_samples: int = 1000, confidence: float = 0.95, seed: int = 42,
    lm_eval=(), base_lm_eval: str | None = None, out_best: str | None = None, select: str = "best",
    retention_floor: float | None = None, cluster_by: str = "auto", test_rows: str | None = None, halving: str | None = None,
) -> pd.DataFrame:
    """Table stage entry point. `scores` (runs/<run>/scores.jsonl) and `base_scores` enable the intervals;
    `lm_eval` / `base_lm_eval` (lm_eval.json of the optional lm-eval-harness rule) add its columns.
    `select` / `retention_floor`: the forgetting-aware choice (loraflow.report.selection); `cluster_by`
    with `test_rows` (the test split): the clustered bootstrap (loraflow.report.clusters). `halving`: the last
    cut of successive halving (search/select<k>.json); the points it stopped get a `pruned at step N` row."""
    pruned = []
    if halving:
        from loraflow.report.halving import pruned_rows

        pruned = pruned_rows(halving, runs)
        runs = {name: hp for name, hp in runs.items() if name not in {row["run"] for row in pruned}}
    df = build_table(base_metrics, train_stats, metrics, merge_checks, runs, best_metric, rank_summaries, pruned)
    if lm_eval and base_lm_eval:
        df = add_lm_eval(df, {"base": base_lm_eval, **by_run(lm_eval, list(runs))})
    groups, key = row_groups(test_rows, cluster_by)
    scoring = Scoring(bootstrap_samples, confidence, seed, Selection(select, retention_floor), groups, key)
    paths = {"base": base_scores, **by_run(scores, list(runs))} if base_scores and scores else None
    df, boot = select_and_score(df, best_metric, paths, scoring)
    write_tables(df, out_csv, out_md, best_metric, out_points_csv, boot, out_effects_csv)
    if out_best:
        write_best(df, best_metric, out_best, split="val" if df.attrs.get("best_source", "").startswith("validation") else "test")
    return df


@dataclass(frozen=True)
class Scoring:
    """How the table scores and chooses: the bootstrap, the forgetting-aware choice, the row groups."""

    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 42
    selection: Selection = Selection()
    groups: dict = field(default_factory=dict)
    group_key: str | None = None


def select_and_score(df: pd.DataFrame, best_metric: str, paths: dict[str, str] | None, scoring: Scoring) -> tuple[pd.DataFrame, Bootstrap | None]:
    """Retention by part, the choice (on validation only), then the test intervals and P(best)."""
    boot = val_boot = None
    if paths:
        boot = Bootstrap(paths, scoring.n_resamples, scoring.seed, scoring.confidence, scoring.groups)
        boot.group_key = scoring.group_key
        val_boot = Bootstrap(paths, scoring.n_resamples, scoring.seed, scoring.confidence, split="val")
        add_retention(df, boot)
    apply_selection(df, best_metric, scoring.selection, val_boot)
    if boot is not None:
        df = add_intervals(df, boot, best_metric)
        certainty.add_prob_best(df, boot, metric_column(best_metric))
    return df, boot


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


def write_partial_comparison(results_dir: str, runs: dict[str, dict], best_metric: str = "rougeL", bootstrap_samples: int = 1000,
                             confidence: float = 0.95, seed: int = 42, merged: list[str] | None = None,
                             scoring: Scoring | None = None, halving: bool = False) -> pd.DataFrame | None:
    """After a failed workflow: rows for finished runs, a FAILED row (stage + error) for the rest; with `halving`
    (search.method halving) a `pruned at step N` row for the points the latest cut so far (search/select<k>.json) stopped.
    `merged`: the runs whose merge is part of the run (merge.runs; None = every run with an adapter).
    `scoring`: the choice and row groups (bootstrap_samples, confidence and seed are used without it)."""
    res = Path(results_dir)
    if not (res / "base" / "eval.json").is_file():
        return None
    rows = [{"run": "base", "status": "ok", **eval_columns(read_json(res / "base" / "eval.json"))}]
    scores = {}
    cuts = sorted(res.glob("search/select*.json"), key=lambda p: int(p.stem.removeprefix("select") or 0)) if halving else []
    if cuts:
        from loraflow.report.halving import pruned_rows

        rows += pruned_rows(str(cuts[-1]), runs)
        runs = {name: hp for name, hp in runs.items() if name not in {row["run"] for row in rows}}
    for name, hp in runs.items():
        d = res / "runs" / name
        files = {"preflight": d / "preflight.json", "train": d / "train_stats.json", "evaluate": d / "eval.json", "merge": d / "merge_check.json"}
        if hp.get("method") == "full" or (merged is not None and name not in merged):
            del files["merge"]
        if hp.get("method") == "combine":  # made by the combine stage, which writes its train_stats.json
            files = {"combine": files["train"], "evaluate": files["evaluate"], **({"merge": files["merge"]} if "merge" in files else {})}
        missing = [stage for stage, f in files.items() if not f.is_file()]
        if not missing:
            rank, merge = d / "rank_summary.json", d / "merge_check.json"
            stats = read_json(files["combine"] if "combine" in files else files["train"])
            rows.append({**run_row(name, hp, stats, read_json(files["evaluate"]), read_json(merge) if merge.is_file() else None, best_metric),
                         **rank_columns(read_json(rank) if rank.is_file() else None)})
            if (d / "scores.jsonl").is_file():
                scores[name] = str(d / "scores.jsonl")
            continue
        stage = missing[0]
        error = _preflight_error(res / "logs" / "preflight.log", name) if stage == "preflight" else _last_error(res / "logs" / stage / f"{name}.log")
        rows.append({**grid_columns(name, hp), "status": f"FAILED in {stage}: {error}"})
    df = finish(rows, best_metric)
    scoring = scoring or Scoring(bootstrap_samples, confidence, seed)
    paths = {"base": str(res / "base" / "scores.jsonl"), **scores} if scores and (res / "base" / "scores.jsonl").is_file() else None
    df, boot = select_and_score(df, best_metric, paths, scoring)
    write_tables(df, str(res / "comparison.csv"), str(res / "comparison.md"), best_metric, boot=boot)
    return df
