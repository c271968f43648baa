"""Figure: what each run learned against what it kept, on validation, with the Pareto set and the floor.

x: the selection metric on the validation split; y: retention on the validation part of the retention
set (share of what the base model answered that the run still answers). Every finished run is a point;
the non-dominated runs (the `pareto` column of comparison.csv) are joined by a line; the chosen run is
marked, and `table.retention_floor` drawn as a horizontal line with the runs below it faded. Read from
comparison.csv, so it can be drawn next to the other plots at any time after the table.
"""

from __future__ import annotations

import math

import pandas as pd

from loraflow.io import atomic_path

CHOSEN, FRONT, OTHER = "#c0392b", "#2980b9", "#95a5a6"


def plot_learned_forgotten(table: pd.DataFrame | str, metric: str, out_png: str, floor: float | None = None) -> bool:
    """Write the figure to `out_png` (a placeholder figure saying why when the table has no validation
    retention); returns whether it has points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv(table) if isinstance(table, str) else table
    runs = df[(df["run"] != "base") & (df.get("status", "ok") == "ok")] if "run" in df else df.iloc[0:0]
    have = "val_retention" in runs and "val_metric" in runs
    runs = runs[runs["val_retention"].notna() & runs["val_metric"].notna()] if have else runs.iloc[0:0]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if not len(runs):
        ax.text(0.5, 0.5, "No validation retention scores\n(evaluate.retention_items: 0)", ha="center", va="center")
        ax.set_axis_off()
    else:
        front = runs[runs.get("pareto", pd.Series("", index=runs.index)).fillna("") == "pareto"].sort_values(
            "val_metric"
        )
        below = runs["val_retention"] < floor if floor else pd.Series(False, index=runs.index)
        ax.scatter(
            runs["val_metric"],
            runs["val_retention"],
            c=[OTHER] * len(runs),
            alpha=[0.35 if b else 0.9 for b in below],  # one per point: matplotlib takes an array
            zorder=2,
        )
        if len(front):
            ax.plot(front["val_metric"], front["val_retention"], "-o", color=FRONT, zorder=3, label="Pareto set")
        chosen = runs[runs["best"].fillna("").astype(str).str.startswith("best")]
        if len(chosen):
            ax.scatter(
                chosen["val_metric"],
                chosen["val_retention"],
                s=160,
                facecolors="none",
                edgecolors=CHOSEN,
                linewidths=2,
                zorder=4,
                label=f"chosen: {chosen['run'].iloc[0]}",
            )
        for _, r in runs.iterrows():
            ax.annotate(
                str(r["run"]),
                (r["val_metric"], r["val_retention"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        if floor and not math.isnan(floor):
            ax.axhline(floor, color=CHOSEN, linestyle="--", linewidth=1, label=f"retention floor {floor:g} %")
        ax.set_xlabel(f"validation {metric} (learned)")
        ax.set_ylabel("validation retention, % (kept)")
        ax.set_title("Learned vs forgotten (validation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return bool(len(runs))
