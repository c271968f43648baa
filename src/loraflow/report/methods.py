"""Methods at their own best rate: with several `grid.method`, each is compared at the learning rate
that was best for it on validation.

Once each method's learning rate is tuned, LoRA variants land close together; a table that compares
methods at one rate mostly measures the rate. So each method's row here is its best run on validation
over the learning-rate axis (and the other grid axes it was swept on); the test figures of those rows,
with paired differences to the best of them, are held out and choose nothing. The per-run flag
`method_best` in comparison.csv marks them ("best rate for <method>").
"""

from __future__ import annotations

import math

import pandas as pd

from loraflow.report.markdown import format_p
from loraflow.report.rows import LABEL, choose_best, lower_is_better, metric_column


def mark_methods(df: pd.DataFrame, best_metric: str) -> list[int]:
    """Flag each method's best run on validation; [] with fewer than two methods."""
    runs = df[(df["run"] != "base") & (df["status"] == "ok")]
    if "method" not in runs or runs["method"].fillna("lora").nunique() < 2:
        return []
    chosen = []
    for _method, sub in runs.groupby(runs["method"].fillna("lora"), sort=False):
        idx, _source = choose_best(sub, best_metric)
        if idx is not None:
            chosen.append(idx)
    df["method_best"] = ""
    for idx in chosen:
        df.loc[idx, "method_best"] = (
            f"best rate for {df.at[idx, 'method'] if not pd.isna(df.at[idx, 'method']) else 'lora'}"
        )
    return chosen


def methods_table(df: pd.DataFrame, best_metric: str, boot=None) -> pd.DataFrame:
    """One row per method at its best rate: run, lr, validation and test metric, and (with per-row
    scores) the paired test difference to the best of these runs on validation."""
    chosen = mark_methods(df, best_metric)
    if not chosen:
        return pd.DataFrame()
    metric = metric_column(best_metric)
    rows = df.loc[chosen]
    lower = lower_is_better(metric)
    sel = rows["val_metric"] if "val_metric" in rows and rows["val_metric"].notna().any() else rows[metric]
    top = rows.loc[sel.idxmin() if lower else sel.idxmax(), "run"]
    out = []
    for _, r in rows.iterrows():
        row = {
            "method": r.get("method") or "lora",
            "run": r["run"],
            "lr": r.get("lr"),
            "val_metric": r.get("val_metric"),
            metric: r.get(metric),
            "lo": r.get(f"{metric}_lo"),
            "hi": r.get(f"{metric}_hi"),
            "vs_top": math.nan,
        }
        c = boot.compare(r["run"], top, metric) if boot is not None and r["run"] != top else None
        if c is not None:
            row.update(vs_top=c.diff, vs_top_lo=c.lo, vs_top_hi=c.hi, vs_top_p=c.p)
        out.append(row)
    table = pd.DataFrame(out)
    table.attrs.update(metric=metric, top=top)
    return table


def methods_markdown(table: pd.DataFrame, best_metric: str) -> str:
    metric = table.attrs["metric"]
    head = (
        f"| method | run | lr | val {LABEL.get(best_metric, best_metric)} | test {LABEL.get(metric, metric)} | vs "
        f"{table.attrs['top']} |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        test = (
            ""
            if pd.isna(r[metric])
            else f"{r[metric]:.2f}" + ("" if pd.isna(r["lo"]) else f" [{r['lo']:.2f}, {r['hi']:.2f}]")
        )
        vs = (
            ""
            if pd.isna(r["vs_top"])
            else f"{r['vs_top']:+.2f} [{r['vs_top_lo']:.2f}, {r['vs_top_hi']:.2f}], {format_p(r['vs_top_p'])}"
        )
        lr = "" if pd.isna(r["lr"]) else f"{r['lr']:g}"
        val = "" if pd.isna(r["val_metric"]) else f"{r['val_metric']:.2f}"
        lines.append(f"| {r['method']} | {r['run']} | {lr} | {val} | {test} | {vs} |")
    return (
        "Each method at the learning rate that was best for it on validation (its best run over the grid): "
        "compared at one rate, methods mostly differ by the rate. Test figures are held out.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def methods_line(table: pd.DataFrame) -> str:
    """'lora at lr 0.001 (r8_a16_qv), dora at lr 0.0003 (...)' for the headline."""
    if not len(table):
        return ""
    parts = [
        f"{r['method']} at lr {r['lr']:g} ({r['run']})" if not pd.isna(r["lr"]) else f"{r['method']} ({r['run']})"
        for _, r in table.iterrows()
    ]
    return "**Methods at their best rate** (on validation): " + "; ".join(parts) + "."
