"""Report stage: loss curves, an r x alpha heatmap, quality vs size with the Pareto front, and the
before/after samples, as files under results/plots/ that `snakemake --report` embeds."""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path

import pandas as pd

from loraflow.io import atomic_path, read_jsonl, write_text

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def plot_losses(train_logs: list[str], run_names: list[str], out_png: str) -> None:
    """Training (thin) and validation (markers) loss of every run on one figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, path in zip(run_names, train_logs):
        df = pd.read_csv(path)
        line, = ax.plot(df["step"], df["train_loss"].rolling(5, min_periods=1).mean(), lw=1, alpha=0.8, label=f"{name} train")
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


def plot_pareto(table: pd.DataFrame, metric: str, out_png: str) -> None:
    plt = _pyplot()
    runs = table[(table["run"] != "base") & (table["status"] == "ok")].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = list(zip(runs["trainable_params"], runs[metric]))
    ax.scatter(runs["trainable_params"], runs[metric], s=40, zorder=3)
    for _, row in runs.iterrows():
        ax.annotate(row["run"], (row["trainable_params"], row[metric]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = pareto_front(pts)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-", color="red", lw=1.5, marker="o", ms=11,
            mfc="none", mew=1.5, label="Pareto front", zorder=4)
    base = table[table["run"] == "base"]
    if len(base) and not math.isnan(base[metric].iloc[0]):
        ax.axhline(base[metric].iloc[0], color="grey", ls=":", label="base model")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs trainable parameters")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, out_png)


def plot_heatmap(table: pd.DataFrame, metric: str, out_png: str) -> None:
    """Mean `metric` over r (rows) x alpha (columns), one panel per target-module choice and method
    (runs without r, such as full fine-tuning, have no cell)."""
    plt = _pyplot()
    runs = table[(table["run"] != "base") & (table["status"] == "ok") & table["r"].notna()].copy()
    runs["panel"] = runs["targets"].astype(str)
    if "method" in runs:
        runs["panel"] += runs["method"].map(lambda m: "" if m == "lora" else f", {m}")
    panels = sorted(runs["panel"].unique())
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 3.8), squeeze=False)
    for ax, target in zip(axes[0], panels):
        grid = runs[runs["panel"] == target].pivot_table(index="r", columns="alpha", values=metric, aggfunc="mean")
        im = ax.imshow(grid.values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(grid.columns)), [f"{a:g}" for a in grid.columns])
        ax.set_yticks(range(len(grid.index)), [str(int(r)) for r in grid.index])
        middle = (grid.values.min() + grid.values.max()) / 2
        for (i, j), v in pd.DataFrame(grid.values).stack().items():
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="black" if v > middle else "white", fontsize=10)
        ax.set_xlabel("lora_alpha")
        ax.set_ylabel("r")
        ax.set_title(f"{metric} — targets {target}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    _save(fig, out_png)


def _question(prompt: str) -> str:
    """The last user turn of a rendered ChatML prompt (for display)."""
    part = prompt.rsplit("<|im_start|>user\n", 1)[-1]
    return part.split("<|im_end|>", 1)[0].strip()


def samples_html(samples_path: str, run: str, n: int) -> str:
    rows = read_jsonl(samples_path)[:n]
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (_question(r["prompt"]), r["reference"], r["base_answer"], r["tuned_answer"])) + "</tr>"
        for r in rows
    )
    return (
        f"<html><head><meta charset='utf-8'><style>table{{border-collapse:collapse;font:13px sans-serif}}"
        f"td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}th{{background:#eee}}</style></head><body>"
        f"<h3>Before / after: {html.escape(run)} (best run), first {len(rows)} test prompts</h3>"
        f"<table><tr><th>question</th><th>reference</th><th>base model</th><th>tuned ({html.escape(run)})</th></tr>{cells}</table></body></html>"
    )


def make_report(
    comparison: str, train_logs: list[str], samples: list[str], out_losses: str, out_heatmap: str, out_pareto: str,
    out_samples: str, run_names: list[str], metric: str = "rougeL", n_samples: int = 8,
) -> None:
    """Report stage entry point."""
    table = pd.read_csv(comparison)
    column = "test_loss" if metric == "eval_loss" else metric
    plot_losses(train_logs, run_names, out_losses)
    plot_heatmap(table, column, out_heatmap)
    plot_pareto(table, column, out_pareto)
    best = table.loc[table["best"].fillna("") != "", "run"]
    best_run = best.iloc[0] if len(best) else run_names[0]
    write_text(out_samples, samples_html(samples[run_names.index(best_run)], best_run, n_samples))
    log.info("report figures written; best run %s", best_run)
