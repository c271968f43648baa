"""Captions of the report's figures: the numbers behind each figure in plain sentences (which run and
how sure, which knob mattered, what it cost), as `captions/*.rst` that each figure's caption includes
(workflow/report/*.rst); `captions/headline_figure.rst` carries the headline figure itself.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loraflow.io import atomic_dir
from loraflow.report.figures import tradeoff_front, tradeoff_points
from loraflow.report.markdown import effects_line, format_p
from loraflow.report.pages import embedded_image_rst
from loraflow.report.rows import LABEL, lower_is_better


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
        ci = (
            f" [{b[metric + '_lo']:.{dec}f}, {b[metric + '_hi']:.{dec}f}]"
            if f"{metric}_lo" in b and not pd.isna(b.get(f"{metric}_lo"))
            else ""
        )
        out["run"] = (
            f"Best run (chosen on validation): {b['run']}, test {LABEL.get(metric, metric)} {b[metric]:.{dec}f}{ci}."
        )
        if "vs_base" in b and not pd.isna(b.get("vs_base")):
            out["run"] += (
                f" Against the base model: {b['vs_base']:+.{dec}f} [{b['vs_base_lo']:.{dec}f}, "
                f"{b['vs_base_hi']:.{dec}f}] ({format_p(b['vs_base_p'])})."
            )
        tied = table[table["tied"].fillna("") == "tied for best"] if "tied" in table else table.iloc[0:0]
        if "vs_best_lo" in table:
            out["sure"] = (
                f"Tied for best (not significantly worse on test, 95 % paired bootstrap): {', '.join(tied['run'])}."
                if len(tied)
                else "Every other run is significantly worse than the best on test."
            )
    line = effects_line(effects, metric)
    out["knob"] = (
        f"Main effects on test {LABEL.get(metric, metric)}: {line}."
        if line
        else "A single level per grid axis: no main effects."
    )
    runs = tradeoff_points(table)
    if len(runs):
        front = tradeoff_front(list((-1 if lower else 1) * runs["vs_base"]), list(runs["forgot"]))
        worst = runs.loc[runs["forgot"].idxmax()]
        out["cost"] = (
            f"Retention loss ranges from {runs['forgot'].min():.1f} to {runs['forgot'].max():.1f} points "
            f"(largest: {worst['run']}, {worst['forgot']:.1f} [{worst['forgot_lo']:.1f}, {worst['forgot_hi']:.1f}]); "
            f"on the learn/forget Pareto front: {', '.join(runs.loc[front, 'run'])}."
        )
    elif "retention_base_acc" in table and (table.loc[table["run"] == "base", "retention_base_acc"] == 0).any():
        out["cost"] = (
            "The base model answers none of the retention questions correctly: nothing to forget, no retention "
            "measured."
        )
    else:
        out["cost"] = "No retention scores (evaluate.retention_items: 0)."
    return out


def write_captions(
    out_dir: str,
    table: pd.DataFrame,
    effects: pd.DataFrame,
    metric: str,
    n_runs_logged: int,
    headline_png: str | None = None,
) -> None:
    s = summary(table, effects, metric)
    every = _rst(" ".join(v for v in (s["run"], s["sure"]) if v))
    texts = {
        "headline": _rst(s["run"])
        + "\n"
        + (_rst(s["sure"]) + "\n" if s["sure"] else "")
        + _rst(s["knob"])
        + "\n"
        + _rst(s["cost"]),
        "ranking": every,
        "effects": _rst(s["knob"]) + "\n" + every,
        "tradeoff": _rst(s["cost"]) + "\n" + every,
        "heatmap": _rst(s["knob"]) + "\n" + every,
        "pareto": every + "\n" + _rst(s["cost"]),
        "losses": _rst(f"{n_runs_logged} trained runs. " + s["run"]) + "\n" + _rst(s["knob"]),
        "samples": every,
    }
    if headline_png:  # the report's first page: an image it embeds, not a path it would lose
        texts["headline_figure"] = embedded_image_rst(
            Path(headline_png).read_bytes(),
            "Headline figure: which run and how sure, which knob mattered, what it cost",
            "loraflow-headline",
        )
    with atomic_dir(out_dir) as tmp:
        for name, text in texts.items():
            (Path(tmp) / f"{name}.rst").write_text(text, encoding="utf-8")
