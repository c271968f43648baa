"""The report's figures (matplotlib, written as PNG files): losses, heatmap, quality against trainable
parameters, the ranking of runs with intervals, main effects, learned against forgotten, and the
headline figure that stacks the answers. loraflow.report.stage says which file shows what.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from loraflow.io import atomic_path
from loraflow.report.markdown import format_level
from loraflow.report.rows import LABEL, lower_is_better

log = logging.getLogger(__name__)

BEST, TIED, OTHER, BASE = "#c0392b", "#e67e22", "#7f8c8d", "#2c3e50"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["run"] != "base") & (table["status"] == "ok")].reset_index(drop=True)


def _colour(best: str, tied: str = "") -> str:
    best = "" if pd.isna(best) else str(best)
    return BEST if best.startswith("best") else TIED if tied == "tied for best" else OTHER


def _colours(df: pd.DataFrame) -> list[str]:
    tied = df["tied"].fillna("") if "tied" in df else pd.Series("", index=df.index)
    return [_colour(b, t) for b, t in zip(df["best"], tied)]


def plot_losses(train_logs: dict[str, str], out_png: str) -> None:
    """Training (thin) and validation (markers) loss of every run on one figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, path in train_logs.items():
        df = pd.read_csv(path)
        (line,) = ax.plot(
            df["step"], df["train_loss"].rolling(5, min_periods=1).mean(), lw=1, alpha=0.8, label=f"{name} train"
        )
        ev = df.dropna(subset=["eval_loss"])
        ax.plot(ev["step"], ev["eval_loss"], "o--", color=line.get_color(), ms=4, label=f"{name} val")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title("Training loss (5-step mean) and validation loss")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, out_png)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated: no other point has fewer params and at least the same quality
    (or the same params and more quality). Points are (params, quality)."""
    front = []
    for i, (p, q) in enumerate(points):
        dominated = any((p2 <= p and q2 >= q) and (p2 < p or q2 > q) for j, (p2, q2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _yerr(df: pd.DataFrame, column: str):
    if f"{column}_lo" not in df or df[f"{column}_lo"].isna().all():
        return None
    return np.vstack([(df[column] - df[f"{column}_lo"]).clip(lower=0), (df[f"{column}_hi"] - df[column]).clip(lower=0)])


def plot_pareto(table: pd.DataFrame, metric: str, out_png: str) -> None:
    plt = _pyplot()
    runs = _finished(table)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = list(zip(runs["trainable_params"], runs[metric]))
    ax.errorbar(
        runs["trainable_params"],
        runs[metric],
        yerr=_yerr(runs, metric),
        fmt="none",
        ecolor="grey",
        elinewidth=1,
        capsize=3,
        zorder=2,
    )
    ax.scatter(runs["trainable_params"], runs[metric], s=40, zorder=3, c=_colours(runs))
    for _, row in runs.iterrows():
        ax.annotate(
            row["run"], (row["trainable_params"], row[metric]), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    front = pareto_front(pts if not lower_is_better(metric) else [(p, -q) for p, q in pts])
    ax.plot(
        [pts[i][0] for i in front],
        [pts[i][1] for i in front],
        "-",
        color="red",
        lw=1.5,
        marker="o",
        ms=11,
        mfc="none",
        mew=1.5,
        label="Pareto front (point estimates)",
        zorder=4,
    )
    base = table[table["run"] == "base"]
    if len(base) and not math.isnan(base[metric].iloc[0]):
        ax.axhline(base[metric].iloc[0], color="grey", ls=":", label="base model")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log)")
    ax.set_ylabel(f"test {metric} (95 % CI)")
    ax.set_title(f"{metric} vs trainable parameters")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, out_png)


def plot_heatmap(table: pd.DataFrame, metric: str, out_png: str) -> None:
    """Mean `metric` over r (rows) x alpha (columns), one panel per target-module choice, method and
    learning rate (runs without r, such as full fine-tuning, have no cell)."""
    plt = _pyplot()
    runs = table[(table["run"] != "base") & (table["status"] == "ok") & table["r"].notna()].copy()
    runs["panel"] = runs["targets"].astype(str)
    if "method" in runs:
        runs["panel"] += runs["method"].map(lambda m: "" if m == "lora" else f", {m}")
    if "lr" in runs and runs["lr"].nunique() > 1:
        runs["panel"] += runs["lr"].map(lambda v: f", lr {v:g}")
    panels = sorted(runs["panel"].unique())
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 3.8), squeeze=False)
    for ax, target in zip(axes[0], panels):
        grid = runs[runs["panel"] == target].pivot_table(index="r", columns="alpha", values=metric, aggfunc="mean")
        im = ax.imshow(grid.values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(grid.columns)), [f"{a:g}" for a in grid.columns])
        ax.set_yticks(range(len(grid.index)), [str(int(r)) for r in grid.index])
        middle = (np.nanmin(grid.values) + np.nanmax(grid.values)) / 2
        for (i, j), v in pd.DataFrame(grid.values).stack().items():
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="black" if v > middle else "white", fontsize=10)
        ax.set_xlabel("lora_alpha")
        ax.set_ylabel("r")
        ax.set_title(f"{metric} — targets {target}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    _save(fig, out_png)


def _ranking(ax, table: pd.DataFrame, metric: str) -> None:
    runs = _finished(table)
    runs = runs.sort_values(metric, ascending=lower_is_better(metric)).reset_index(drop=True)
    y = np.arange(len(runs))[::-1]
    ax.errorbar(runs[metric], y, xerr=_yerr(runs, metric), fmt="none", ecolor="grey", capsize=3, zorder=2)
    ax.scatter(runs[metric], y, c=_colours(runs), s=45, zorder=3)
    tied = runs["tied"].fillna("") if "tied" in runs else [""] * len(runs)
    ax.set_yticks(
        y,
        [
            f"{r}  ({b if isinstance(b, str) and b else t})" if (isinstance(b, str) and b) or t else r
            for r, b, t in zip(runs["run"], runs["best"], tied)
        ],
        fontsize=8,
    )
    base = table[table["run"] == "base"]
    if len(base) and not pd.isna(base[metric].iloc[0]):
        ax.axvline(base[metric].iloc[0], color=BASE, ls=":", label=f"base {base[metric].iloc[0]:.2f}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel(f"test {LABEL.get(metric, metric)} with 95 % CI (held out)")
    ax.grid(alpha=0.3, axis="x")


def plot_ranking(table: pd.DataFrame, metric: str, out_png: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(_finished(table)), 2) + 1.2))
    _ranking(ax, table, metric)
    ax.set_title("Best (red, chosen on validation), tied for best (orange), the rest (grey)", fontsize=9)
    _save(fig, out_png)


def _effects_panel(ax, effects: pd.DataFrame, metric: str) -> bool:
    rows = effects[(effects["metric"] == metric) & (effects["axis"] != "r x alpha")] if len(effects) else effects
    if not len(rows):
        ax.text(
            0.5, 0.5, "a single grid point per axis:\nno main effects", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
        return False
    labels, x = [], 0
    for axis, g in rows.groupby("axis", sort=False):
        xs = np.arange(x, x + len(g))
        ax.errorbar(
            xs,
            g["mean"],
            yerr=np.vstack([g["mean"] - g["mean_lo"], g["mean_hi"] - g["mean"]]),
            fmt="o-",
            capsize=3,
            label=axis,
        )
        labels += [f"{axis}={format_level(v)}" for v in g["level"]]
        x += len(g) + 1
    ticks = [i for i in range(x) if i not in np.cumsum([len(g) + 1 for _, g in rows.groupby("axis", sort=False)]) - 1]
    ax.set_xticks(ticks[: len(labels)], labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"marginal mean test {LABEL.get(metric, metric)} (95 % CI)")
    ax.set_title("Main effects (mean over the other axes)", fontsize=9)
    ax.grid(alpha=0.3)
    return True


def plot_effects(
    table: pd.DataFrame, effects: pd.DataFrame, points: pd.DataFrame | None, metric: str, out_png: str
) -> None:
    """Main effects per axis, and the r x alpha interaction plot."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    _effects_panel(ax1, effects, metric)
    src = points if points is not None and len(points) else _finished(table)
    col = f"{metric}_mean" if points is not None and len(points) and f"{metric}_mean" in src else metric
    src = src[src["r"].notna() & src["alpha"].notna()] if "r" in src else src.iloc[0:0]
    if len(src) and src["alpha"].nunique() > 1:
        for r, g in src.groupby("r"):
            g = (
                g.groupby("alpha")
                .agg(
                    v=(col, "mean"),
                    lo=(f"{metric}_lo", "mean") if f"{metric}_lo" in g else (col, "mean"),
                    hi=(f"{metric}_hi", "mean") if f"{metric}_hi" in g else (col, "mean"),
                )
                .reset_index()
            )
            ax2.errorbar(
                g["alpha"],
                g["v"],
                yerr=np.vstack([(g["v"] - g["lo"]).clip(lower=0), (g["hi"] - g["v"]).clip(lower=0)]),
                fmt="o-",
                capsize=3,
                label=f"r = {int(r)}",
            )
        ax2.set_xscale("log", base=2)
        ax2.set_xticks(sorted(src["alpha"].unique()), [f"{a:g}" for a in sorted(src["alpha"].unique())])
        ax2.set_xlabel("lora_alpha")
        ax2.set_ylabel(f"test {LABEL.get(metric, metric)} (95 % CI)")
        ax2.set_title("r × alpha interaction (parallel lines: no interaction)", fontsize=9)
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    else:
        ax2.text(0.5, 0.5, "needs two or more alpha values", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_axis_off()
    _save(fig, out_png)


def tradeoff_points(table: pd.DataFrame) -> pd.DataFrame:
    """Per finished run: task gain over base (vs_base) and retention loss (-Δ retention), with intervals."""
    runs = _finished(table)
    if "d_retention" not in runs or "vs_base" not in runs:
        return runs.iloc[0:0]
    runs = runs[runs["d_retention"].notna() & runs["vs_base"].notna()].copy()
    runs["forgot"], runs["forgot_lo"], runs["forgot_hi"] = (
        -runs["d_retention"],
        -runs["d_retention_hi"],
        -runs["d_retention_lo"],
    )
    return runs.reset_index(drop=True)


def tradeoff_front(gain: list[float], forgot: list[float]) -> list[int]:
    """Runs not dominated: no other run gains at least as much while forgetting no more (one strictly)."""
    return pareto_front([(f, g) for f, g in zip(forgot, gain)])


def _tradeoff(ax, table: pd.DataFrame, metric: str) -> bool:
    runs = tradeoff_points(table)
    if not len(runs):
        ax.text(
            0.5,
            0.5,
            "no retention scores (retention off, or the base\nanswers none of the retention questions)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return False
    sign = -1 if lower_is_better(metric) else 1  # a lower loss is a gain
    gain = sign * runs["vs_base"]
    glo, ghi = (
        (sign * runs["vs_base_lo"], sign * runs["vs_base_hi"])
        if sign > 0
        else (sign * runs["vs_base_hi"], sign * runs["vs_base_lo"])
    )
    ax.errorbar(
        runs["forgot"],
        gain,
        xerr=np.vstack(
            [(runs["forgot"] - runs["forgot_lo"]).clip(lower=0), (runs["forgot_hi"] - runs["forgot"]).clip(lower=0)]
        ),
        yerr=np.vstack([(gain - glo).clip(lower=0), (ghi - gain).clip(lower=0)]),
        fmt="none",
        ecolor="grey",
        capsize=2,
        zorder=2,
    )
    ax.scatter(runs["forgot"], gain, c=_colours(runs), s=45, zorder=3)
    for i, row in runs.iterrows():
        ax.annotate(row["run"], (row["forgot"], gain[i]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = tradeoff_front(list(gain), list(runs["forgot"]))
    ax.plot(
        runs.loc[front, "forgot"],
        gain[front],
        "-",
        color="red",
        lw=1.2,
        marker="o",
        ms=11,
        mfc="none",
        mew=1.2,
        label="Pareto front",
        zorder=4,
    )
    ax.axvline(0, color=BASE, ls=":", lw=1)
    ax.set_xlabel("forgotten: retention loss vs base, points (95 % CI)")
    ax.set_ylabel(f"learned: test {LABEL.get(metric, metric)} gain vs base")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return True


def plot_tradeoff(table: pd.DataFrame, metric: str, out_png: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _tradeoff(ax, table, metric)
    ax.set_title("What tuning learned against what it forgot (up and left is better)", fontsize=9)
    _save(fig, out_png)


def plot_headline(table: pd.DataFrame, effects: pd.DataFrame, metric: str, title: str, out_png: str) -> None:
    """Three answers stacked (readable in the report's narrow first-page column): how sure (ranking),
    which knob (main effects), what it cost (learned vs forgotten)."""
    import textwrap

    plt = _pyplot()
    n = len(_finished(table))
    fig, axes = plt.subplots(
        3, 1, figsize=(8, 12 + 0.3 * n), gridspec_kw={"height_ratios": [max(2.5, 0.35 * n + 1), 3, 3.4]}
    )
    _ranking(axes[0], table, metric)
    axes[0].set_title(
        "Which run, how sure: held-out test score with 95 % CI\n(red: best, chosen on validation; orange: "
        "tied for best)",
        fontsize=10,
    )
    _effects_panel(axes[1], effects, metric)
    axes[1].set_title("Which knob mattered: main effects (mean over the other axes)", fontsize=10)
    _tradeoff(axes[2], table, metric)
    axes[2].set_title("What it cost: learned vs forgotten", fontsize=10)
    fig.suptitle("\n".join(textwrap.wrap(title, 95)), fontsize=10, x=0.02, ha="left")
    fig.tight_layout()
    _save(fig, out_png)
