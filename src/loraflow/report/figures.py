"""Report stage: figures that answer the comparison's questions, as files under results/plots/ that
`snakemake --report` embeds.

- `headline.png` (also on the report's first page, with `headline.rst`): which run, how sure we are
  (test metric of every run with its 95 % interval, best and tied-for-best marked), which knob
  mattered (main effects) and what it cost (learned against forgotten).
- `ranking.png`: every run's test metric with its interval, sorted; best and tied marked.
- `effects.png`: main effect of each grid axis (marginal means with intervals) and the r x alpha
  interaction plot (one line per r over alpha; parallel lines = no interaction).
- `tradeoff.png`: task gain against retention loss per run, with the Pareto front.
- `losses.png`, `heatmap.png`, `pareto.png` (quality vs trainable parameters), `samples.html`.
- `comparison.html`: the comparison table, sortable by any column (the report shows a CSV only as a download).
- `captions/*.rst`: the numbers behind each figure, included by its caption (workflow/report/*.rst);
  `captions/headline_figure.rst` carries the headline figure itself for the report's first page.

Every per-run file is matched to its run by its run directory (runs/<run>/...), never by position.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from loraflow.io import atomic_dir, atomic_path, read_jsonl, write_text
from loraflow.report.pages import embedded_image_rst, sortable_table_html
from loraflow.report.table import LABEL, _lvl, _p, by_run, effects_line, lower_is_better, metric_column

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


def _yerr(df: pd.DataFrame, column: str):
    if f"{column}_lo" not in df or df[f"{column}_lo"].isna().all():
        return None
    return np.vstack([(df[column] - df[f"{column}_lo"]).clip(lower=0), (df[f"{column}_hi"] - df[column]).clip(lower=0)])


def plot_pareto(table: pd.DataFrame, metric: str, out_png: str) -> None:
    plt = _pyplot()
    runs = _finished(table)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = list(zip(runs["trainable_params"], runs[metric]))
    ax.errorbar(runs["trainable_params"], runs[metric], yerr=_yerr(runs, metric), fmt="none", ecolor="grey", elinewidth=1, capsize=3, zorder=2)
    ax.scatter(runs["trainable_params"], runs[metric], s=40, zorder=3, c=_colours(runs))
    for _, row in runs.iterrows():
        ax.annotate(row["run"], (row["trainable_params"], row[metric]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = pareto_front(pts if not lower_is_better(metric) else [(p, -q) for p, q in pts])
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-", color="red", lw=1.5, marker="o", ms=11,
            mfc="none", mew=1.5, label="Pareto front (point estimates)", zorder=4)
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
    ax.set_yticks(y, [f"{r}  ({b if isinstance(b, str) and b else t})" if (isinstance(b, str) and b) or t else r
                      for r, b, t in zip(runs["run"], runs["best"], tied)], fontsize=8)
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
        ax.text(0.5, 0.5, "a single grid point per axis:\nno main effects", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return False
    labels, x = [], 0
    for axis, g in rows.groupby("axis", sort=False):
        xs = np.arange(x, x + len(g))
        ax.errorbar(xs, g["mean"], yerr=np.vstack([g["mean"] - g["mean_lo"], g["mean_hi"] - g["mean"]]), fmt="o-", capsize=3, label=axis)
        labels += [f"{axis}={_lvl(v)}" for v in g["level"]]
        x += len(g) + 1
    ticks = [i for i in range(x) if i not in np.cumsum([len(g) + 1 for _, g in rows.groupby("axis", sort=False)]) - 1]
    ax.set_xticks(ticks[: len(labels)], labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"marginal mean test {LABEL.get(metric, metric)} (95 % CI)")
    ax.set_title("Main effects (mean over the other axes)", fontsize=9)
    ax.grid(alpha=0.3)
    return True


def plot_effects(table: pd.DataFrame, effects: pd.DataFrame, points: pd.DataFrame | None, metric: str, out_png: str) -> None:
    """Main effects per axis, and the r x alpha interaction plot."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    _effects_panel(ax1, effects, metric)
    src = points if points is not None and len(points) else _finished(table)
    col = f"{metric}_mean" if points is not None and len(points) and f"{metric}_mean" in src else metric
    src = src[src["r"].notna() & src["alpha"].notna()] if "r" in src else src.iloc[0:0]
    if len(src) and src["alpha"].nunique() > 1:
        for r, g in src.groupby("r"):
            g = g.groupby("alpha").agg(v=(col, "mean"), lo=(f"{metric}_lo", "mean") if f"{metric}_lo" in g else (col, "mean"),
                                       hi=(f"{metric}_hi", "mean") if f"{metric}_hi" in g else (col, "mean")).reset_index()
            ax2.errorbar(g["alpha"], g["v"], yerr=np.vstack([(g["v"] - g["lo"]).clip(lower=0), (g["hi"] - g["v"]).clip(lower=0)]),
                         fmt="o-", capsize=3, label=f"r = {int(r)}")
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
    runs["forgot"], runs["forgot_lo"], runs["forgot_hi"] = -runs["d_retention"], -runs["d_retention_hi"], -runs["d_retention_lo"]
    return runs.reset_index(drop=True)


def tradeoff_front(gain: list[float], forgot: list[float]) -> list[int]:
    """Runs not dominated: no other run gains at least as much while forgetting no more (one strictly)."""
    return pareto_front([(f, g) for f, g in zip(forgot, gain)])


def _tradeoff(ax, table: pd.DataFrame, metric: str) -> bool:
    runs = tradeoff_points(table)
    if not len(runs):
        ax.text(0.5, 0.5, "no retention scores (retention off, or the base\nanswers none of the retention questions)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return False
    sign = -1 if lower_is_better(metric) else 1  # a lower loss is a gain
    gain = sign * runs["vs_base"]
    glo, ghi = (sign * runs["vs_base_lo"], sign * runs["vs_base_hi"]) if sign > 0 else (sign * runs["vs_base_hi"], sign * runs["vs_base_lo"])
    ax.errorbar(runs["forgot"], gain, xerr=np.vstack([(runs["forgot"] - runs["forgot_lo"]).clip(lower=0), (runs["forgot_hi"] - runs["forgot"]).clip(lower=0)]),
                yerr=np.vstack([(gain - glo).clip(lower=0), (ghi - gain).clip(lower=0)]), fmt="none", ecolor="grey", capsize=2, zorder=2)
    ax.scatter(runs["forgot"], gain, c=_colours(runs), s=45, zorder=3)
    for i, row in runs.iterrows():
        ax.annotate(row["run"], (row["forgot"], gain[i]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = tradeoff_front(list(gain), list(runs["forgot"]))
    ax.plot(runs.loc[front, "forgot"], gain[front], "-", color="red", lw=1.2, marker="o", ms=11, mfc="none", mew=1.2, label="Pareto front", zorder=4)
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
    fig, axes = plt.subplots(3, 1, figsize=(8, 12 + 0.3 * n), gridspec_kw={"height_ratios": [max(2.5, 0.35 * n + 1), 3, 3.4]})
    _ranking(axes[0], table, metric)
    axes[0].set_title("Which run, how sure: held-out test score with 95 % CI\n(red: best, chosen on validation; orange: tied for best)", fontsize=10)
    _effects_panel(axes[1], effects, metric)
    axes[1].set_title("Which knob mattered: main effects (mean over the other axes)", fontsize=10)
    _tradeoff(axes[2], table, metric)
    axes[2].set_title("What it cost: learned vs forgotten", fontsize=10)
    fig.suptitle("\n".join(textwrap.wrap(title, 95)), fontsize=10, x=0.02, ha="left")
    fig.tight_layout()
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


# --- captions: the numbers behind each figure ----------------------------------------------------------


def _rst(text: str) -> str:
    return text.replace("*", r"\*").replace("`", "'").replace("|", r"\|") + "\n"


def summary(table: pd.DataFrame, effects: pd.DataFrame, metric: str) -> dict[str, str]:
    """Plain sentences: which run (and how sure), which knob, what it cost."""
    lower = lower_is_better(metric)
    dec = 4 if lower else 2
    best = table[table["best"].fillna("").str.startswith("best")]
    out = {"run": "No run finished.", "sure": "", "knob": "", "cost": ""}
    if len(best):
        b = best.iloc[0]
        ci = f" [{b[metric + '_lo']:.{dec}f}, {b[metric + '_hi']:.{dec}f}]" if f"{metric}_lo" in b and not pd.isna(b.get(f"{metric}_lo")) else ""
        out["run"] = f"Best run (chosen on validation): {b['run']}, test {LABEL.get(metric, metric)} {b[metric]:.{dec}f}{ci}."
        if "vs_base" in b and not pd.isna(b.get("vs_base")):
            out["run"] += f" Against the base model: {b['vs_base']:+.{dec}f} [{b['vs_base_lo']:.{dec}f}, {b['vs_base_hi']:.{dec}f}] ({_p(b['vs_base_p'])})."
        tied = table[table["tied"].fillna("") == "tied for best"] if "tied" in table else table.iloc[0:0]
        if "vs_best_lo" in table:
            out["sure"] = (f"Tied for best (not significantly worse on test, 95 % paired bootstrap): {', '.join(tied['run'])}."
                           if len(tied) else "Every other run is significantly worse than the best on test.")
    line = effects_line(effects, metric)
    out["knob"] = f"Main effects on test {LABEL.get(metric, metric)}: {line}." if line else "A single level per grid axis: no main effects."
    runs = tradeoff_points(table)
    if len(runs):
        front = tradeoff_front(list((-1 if lower else 1) * runs["vs_base"]), list(runs["forgot"]))
        worst = runs.loc[runs["forgot"].idxmax()]
        out["cost"] = (f"Retention loss ranges from {runs['forgot'].min():.1f} to {runs['forgot'].max():.1f} points "
                       f"(largest: {worst['run']}, {worst['forgot']:.1f} [{worst['forgot_lo']:.1f}, {worst['forgot_hi']:.1f}]); "
                       f"on the learn/forget Pareto front: {', '.join(runs.loc[front, 'run'])}.")
    elif "retention_base_acc" in table and (table.loc[table["run"] == "base", "retention_base_acc"] == 0).any():
        out["cost"] = "The base model answers none of the retention questions correctly: nothing to forget, no retention measured."
    else:
        out["cost"] = "No retention scores (evaluate.retention_items: 0)."
    return out


def write_captions(out_dir: str, table: pd.DataFrame, effects: pd.DataFrame, metric: str, n_runs_logged: int,
                   headline_png: str | None = None) -> None:
    s = summary(table, effects, metric)
    every = _rst(" ".join(v for v in (s["run"], s["sure"]) if v))
    texts = {
        "headline": _rst(s["run"]) + "\n" + (_rst(s["sure"]) + "\n" if s["sure"] else "") + _rst(s["knob"]) + "\n" + _rst(s["cost"]),
        "ranking": every,
        "effects": _rst(s["knob"]) + "\n" + every,
        "tradeoff": _rst(s["cost"]) + "\n" + every,
        "heatmap": _rst(s["knob"]) + "\n" + every,
        "pareto": every + "\n" + _rst(s["cost"]),
        "losses": _rst(f"{n_runs_logged} trained runs. " + s["run"]) + "\n" + _rst(s["knob"]),
        "samples": every,
    }
    if headline_png:  # the report's first page: an image it embeds, not a path it would lose
        texts["headline_figure"] = embedded_image_rst(Path(headline_png).read_bytes(), "Headline figure: which run and how sure, "
                                                      "which knob mattered, what it cost", "loraflow-headline")
    with atomic_dir(out_dir) as tmp:
        for name, text in texts.items():
            (Path(tmp) / f"{name}.rst").write_text(text, encoding="utf-8")


def make_report(
    comparison: str, train_logs, samples, out_losses: str, out_heatmap: str, out_pareto: str,
    out_samples: str, run_names: list[str] | None = None, metric: str = "rougeL", n_samples: int = 8, effects: str | None = None,
    points: str | None = None, out_headline: str | None = None, out_ranking: str | None = None, out_effects: str | None = None,
    out_tradeoff: str | None = None, out_captions: str | None = None, out_table_html: str | None = None,
) -> None:
    """Report stage entry point. `train_logs` and `samples` are matched to runs by their run directory."""
    table = pd.read_csv(comparison)
    column = metric_column(metric)
    eff = pd.read_csv(effects) if effects and Path(effects).is_file() and Path(effects).stat().st_size > 1 else pd.DataFrame()
    pts = pd.read_csv(points) if points and Path(points).is_file() and Path(points).stat().st_size > 1 else None
    logs = by_run(train_logs, None)
    plot_losses(logs, out_losses)
    plot_heatmap(table, column, out_heatmap)
    plot_pareto(table, column, out_pareto)
    best = table.loc[table["best"].fillna("").str.startswith("best"), "run"]
    sample_files = by_run(samples, None)
    best_run = best.iloc[0] if len(best) else next(iter(sample_files))
    write_text(out_samples, samples_html(sample_files[best_run], best_run, n_samples))
    if out_ranking:
        plot_ranking(table, column, out_ranking)
    if out_effects:
        plot_effects(table, eff, pts, column, out_effects)
    if out_tradeoff:
        plot_tradeoff(table, column, out_tradeoff)
    if out_headline:
        s = summary(table, eff, column)
        plot_headline(table, eff, column, "\n".join(v for v in (s["run"], s["sure"]) if v), out_headline)
    if out_table_html:
        write_text(out_table_html, sortable_table_html(table, f"Comparison: one row per run; best chosen on validation by {metric}"))
    if out_captions:
        write_captions(out_captions, table, eff, column, len(logs), out_headline)
    log.info("report figures written; best run %s", best_run)
