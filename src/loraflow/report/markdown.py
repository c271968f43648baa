"""Markdown of the comparison: number and cell formats and the tables (selection and differences, quality
with intervals, retention, seeds, main effects, grid). The headline above them is loraflow.report.headline.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from loraflow.report.rows import DECIMALS, EVAL_KEYS, LABEL, OPTIONAL_EVAL_KEYS, lower_is_better, metric_column

if TYPE_CHECKING:
    pass


def format_level(v) -> str:
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


def format_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _fmt(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "trainable_params":
        return f"{int(value):,}"
    if column in ("r", "seed", "suggested_r", "retention_items", "val_retention_items"):
        return str(int(value))
    if column in ("alpha", "lr"):
        return f"{value:g}"
    if column.endswith("_p"):
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
            out.append(
                f"{d:+.{decimals}f} [{row[prefix + '_lo']:.{decimals}f}, {row[prefix + '_hi']:.{decimals}f}], "
                f"{format_p(row[prefix + '_p'])}"
            )
    return out


def to_markdown(df: pd.DataFrame) -> str:
    lines = [
        "| " + " | ".join(df.columns) + " |",
        "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(row[c], c) for c in df.columns) + " |" for _, row in df.iterrows()]
    return "\n".join(lines) + "\n"


def cells_markdown(head: list[str], columns: list[list[str]], right_from: int = 1) -> str:
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * right_from + ["---:"] * (len(head) - right_from)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in zip(*columns)]
    return "\n".join(lines) + "\n"


def grid_markdown(df: pd.DataFrame) -> str:
    cols = [
        c
        for c in (
            "run",
            "status",
            "seed",
            "method",
            "r",
            "alpha",
            "lr",
            "alpha_over_r",
            "scale",
            "targets",
            "precision",
        )
        if c in df
    ]
    return to_markdown(df[cols])


def marks(df: pd.DataFrame) -> list[str]:
    """The `best` cell of a Markdown row: the chosen run, or tied for best."""
    tied = df["tied"].fillna("") if "tied" in df else pd.Series("", index=df.index)
    return [b if b else t for b, t in zip(df["best"].fillna(""), tied)]


def quality_markdown(df: pd.DataFrame, best_metric: str) -> str:
    """Test metrics (held out) with intervals, and the differences of the selection metric."""
    metrics = [
        c for c in ("test_loss", "perplexity", *EVAL_KEYS, *OPTIONAL_EVAL_KEYS) if c in df and df[c].notna().any()
    ]
    head, cols = ["run", "best"], [list(df["run"]), marks(df)]
    for m in metrics:
        head.append(m)
        cols.append(with_ci(df, m))
    return cells_markdown(head, cols, 2)


def comparisons_markdown(df: pd.DataFrame, best_metric: str) -> str:
    metric = metric_column(best_metric)
    runs = df[df["run"] != "base"]
    dec = 4 if lower_is_better(metric) else 2
    head = [
        "run",
        "best",
        f"val {LABEL.get(best_metric, best_metric)}",
        "val_loss",
        f"test {LABEL.get(metric, metric)}",
        "vs base",
        "vs best",
    ]
    cols = [
        list(runs["run"]),
        marks(runs),
        [_fmt(v, "val_loss" if lower_is_better(metric) else "x") for v in runs.get("val_metric", [None] * len(runs))],
        [_fmt(v, "val_loss") for v in runs.get("val_loss", [None] * len(runs))],
        with_ci(runs, metric, dec),
        diff_cells(runs, "vs_base", dec),
        diff_cells(runs, "vs_best", dec),
    ]
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
    cols = [
        list(df["run"]),
        with_ci(df, "retention", 1),
        diff_cells(df, "d_retention", 1),
        [_fmt(v, "retention_items") for v in df.get("retention_items", [None] * len(df))],
    ]
    if "val_retention" in df and df["val_retention"].notna().any():
        head += ["val retention (chooses)", "val items"]
        cols += [
            with_ci(df, "val_retention", 1),
            [_fmt(v, "retention_items") for v in df.get("val_retention_items", [None] * len(df))],
        ]
    return cells_markdown(head, cols, 1)


def unreduced_note(df: pd.DataFrame) -> str:
    """A reduce_intruders row where peft found no intruder dimension is its parent's adapter again:
    say so, or its row reads as a reduction that cost and gave nothing."""
    if "intruders_reduced" not in df:
        return ""
    same = list(df.loc[df["intruders_reduced"] == 0, "run"])
    if not same:
        return ""
    return (
        f"\n{', '.join(f'`{r}`' for r in same)}: no intruder dimension found (reduce_intruders' threshold), so "
        "the adapter is its parent's and so are its figures.\n"
    )


# The cost table; merges are made after the table and summarised in merges.{csv,md}.
COST = [
    "run",
    "trainable_params",
    "trainable_pct",
    "adapter_mb",
    "optimizer",
    "r",
    "eff_rank",
    "suggested_r",
    "intruders",
    "train_time_s",
    "peak_memory_mb",
    "final_train_loss",
]


def points_markdown(points: pd.DataFrame, best_metric: str = "rougeL") -> str:
    metrics = [c.removesuffix("_mean") for c in points.columns if c.endswith("_mean")]
    metric = metric_column(best_metric)
    head = ["point", "best", "seeds", "r", "alpha", "targets", *metrics]
    if f"{metric}_lo" in points:
        head.append(f"{metric} 95 % CI (rows + seeds)")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for _, row in points.iterrows():
        cells = [
            row["point"],
            row["best"] or row.get("tied", "") or "",
            str(row["seeds"]),
            _fmt(row["r"], "r"),
            _fmt(row["alpha"], "alpha"),
            str(row["targets"]),
        ]
        cells += [
            f"{row[m + '_mean']:.{DECIMALS.get(m, 2)}f} ± {row[m + '_std']:.{DECIMALS.get(m, 2)}f}" for m in metrics
        ]
        if f"{metric}_lo" in points:
            cells.append(
                "" if pd.isna(row[f"{metric}_lo"]) else f"[{row[f'{metric}_lo']:.2f}, {row[f'{metric}_hi']:.2f}]"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def effects_markdown(effects: pd.DataFrame) -> str:
    head = ["metric", "axis", "level", "points", "marginal mean", "effect vs first level", "p"]
    cols: list[list[str]] = [[] for _ in head]
    for r in effects.itertuples():
        dec = 4 if lower_is_better(r.metric) else 2
        mean = (
            ""
            if pd.isna(getattr(r, "mean", math.nan))
            else f"{r.mean:.{dec}f} [{r.mean_lo:.{dec}f}, {r.mean_hi:.{dec}f}]"
        )
        vs = "" if pd.isna(r.vs) or r.vs == "" else f" vs {format_level(r.vs)}"
        effect = "" if pd.isna(r.effect) else f"{r.effect:+.{dec}f} [{r.effect_lo:.{dec}f}, {r.effect_hi:.{dec}f}]{vs}"
        points = "" if pd.isna(getattr(r, "points", math.nan)) else str(int(r.points))
        for c, v in zip(
            cols,
            (r.metric, r.axis, format_level(r.level), points, mean, effect, "" if pd.isna(r.p) else _fmt(r.p, "p_p")),
        ):
            c.append(v)
    return cells_markdown(head, cols, 3)


def effects_line(effects: pd.DataFrame, metric: str) -> str:
    """'alpha 16→32: +4.9 ROUGE-L [4.1, 5.7]; r 4→16: +0.2 [−0.6, 1.0]' for `metric`."""
    if effects is None or not len(effects):
        return ""
    rows = effects[(effects["metric"] == metric) & effects["effect"].notna()]
    main = rows[rows["axis"] != "r x alpha"]
    rows = pd.concat(
        [main.reindex(main["effect"].abs().sort_values(ascending=False).index), rows[rows["axis"] == "r x alpha"]]
    )  # biggest first
    parts, first = [], True
    dec = 3 if lower_is_better(metric) else 1
    for r in rows.itertuples():
        if r.axis == "r x alpha":
            text = (
                f"r × alpha interaction: {_num(r.effect, dec, True)} [{_num(r.effect_lo, dec)}, "
                f"{_num(r.effect_hi, dec)}]"
            )
        else:
            unit = f" {LABEL.get(metric, metric)}" if first else ""
            text = (
                f"{r.axis} {format_level(r.vs)}→{format_level(r.level)}: {_num(r.effect, dec, True)}{unit} "
                f"[{_num(r.effect_lo, dec)}, {_num(r.effect_hi, dec)}]"
            )
            first = False
        parts.append(f"{text} ({format_p(r.p)})")
    return "; ".join(parts)


def lr_note(df: pd.DataFrame) -> str:
    runs = df[(df["run"] != "base") & df["r"].notna()] if "r" in df else df.iloc[0:0]
    if not len(runs) or runs["r"].nunique() < 2 and runs["alpha"].nunique() < 2:
        return ""
    lrs = runs["lr"].dropna().unique() if "lr" in runs else []
    text = (
        "`scale` is the factor LoRA multiplies its update by: alpha/r, or alpha/√r for rsLoRA. With Adam, the size of "
        "each step of A and B does not depend on that factor, so the update the model sees grows with it: at a fixed "
        "learning rate an r × alpha grid mostly sweeps the effective learning rate (rows with the same `scale` differ "
        "little; see the main effects). Sweep `grid.learning_rate` first, then r; r matters less than expected until "
        "capacity binds (Schulman et al., *LoRA Without Regret*, 2025; Kalajdzievski, *rsLoRA*, 2023)."
    )
    if len(lrs) <= 1:
        text += " This grid has a single learning rate."
    return text + "\n"
