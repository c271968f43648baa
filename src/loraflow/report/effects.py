"""Across seeds and across the grid: per-point means with seed intervals and a two-level bootstrap
(rows, then seeds), the best point and those tied with it, and the main effect of every grid axis with
two or more levels (marginal means and differences with intervals) plus the r x alpha interaction
contrast (`comparison_effects.csv`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from loraflow.report import stats as st
from loraflow.report.markdown import format_level
from loraflow.report.rows import AXES, POINT_METRICS, lower_is_better, metric_column

if TYPE_CHECKING:
    from loraflow.report.bootstrap import Bootstrap


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
        reps = [r for r in (boot.reps(name, metric) for name in g["run"]) if r is not None]
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
    out = grouped[
        [c for c in ("method", "r", "alpha", "lr", "scale", "targets", "trainable_params") if c in runs]
    ].first()
    out.insert(0, "seeds", grouped.size())
    for c in metrics:
        out[f"{c}_mean"] = grouped[c].mean()
        out[f"{c}_std"] = grouped[c].std(ddof=1)
        ci = grouped[c].apply(lambda s: st.t_interval(list(s)))
        out[f"{c}_seed_lo"], out[f"{c}_seed_hi"] = [v[0] for v in ci], [v[1] for v in ci]
    metric = metric_column(best_metric)
    select = (
        "val_metric_mean" if "val_metric_mean" in out and out["val_metric_mean"].notna().any() else f"{metric}_mean"
    )
    lower = lower_is_better(metric)
    out["best"], out["tied"] = "", ""
    best = out[select].idxmin() if lower else out[select].idxmax()
    out.loc[best, "best"] = f"best mean ({best_metric})"
    reps = point_replicates(df, boot, metric)
    confidence = boot.confidence if boot is not None else 0.0  # without a bootstrap there are no replicates
    for point, r in reps.items():
        out.loc[point, [f"{metric}_lo", f"{metric}_hi"]] = st.interval(r[1], confidence)
        if point != best and best in reps:
            cmp = st.compare(r, reps[best], confidence)
            out.loc[point, ["vs_best", "vs_best_lo", "vs_best_hi", "vs_best_p"]] = [cmp.diff, cmp.lo, cmp.hi, cmp.p]
            if not (cmp.hi < 0 if not lower else cmp.lo > 0):
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
            a0, a1 = format_level(inter["a_levels"][0]), format_level(inter["a_levels"][1])
            b0, b1 = format_level(inter["b_levels"][0]), format_level(inter["b_levels"][1])
            rows.append(
                {
                    "metric": metric,
                    "axis": "r x alpha",
                    "level": f"(r{a1} - r{a0}) at alpha {b1} minus at alpha {b0}",
                    "vs": "",
                    "effect": inter["contrast"],
                    "effect_lo": inter["lo"],
                    "effect_hi": inter["hi"],
                    "p": inter["p"],
                }
            )
    return pd.DataFrame(rows)
