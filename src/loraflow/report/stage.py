"""Report stage: figures that answer the comparison's questions, as files under results/plots/ that
`snakemake --report` embeds.

- `headline.png` (also on the report's first page, with `headline.rst`): which run, how sure we are
  (test metric of every run with its 95 % interval, best and tied-for-best marked), which knob
  mattered (main effects) and what it cost (learned against forgotten).
- `ranking.png`: every run's test metric with its interval, sorted; best and tied marked.
- `effects.png`: main effect of each grid axis (marginal means with intervals) and the r x alpha
  interaction plot (one line per r over alpha; parallel lines = no interaction).
- `tradeoff.png`: task gain against retention loss per run, with the Pareto front.
- `losses.png`, `heatmap.png`, `pareto.png` (quality vs trainable parameters), `samples.html` (loraflow.report.pages).
- `comparison.html`: the comparison table, sortable by any column (the report shows a CSV only as a download).
- `captions/*.rst`: the numbers behind each figure, included by its caption (workflow/report/*.rst);
  `captions/headline_figure.rst` carries the headline figure itself for the report's first page.

Every per-run file is matched to its run by its run directory (runs/<run>/...), never by position.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from loraflow.io import write_text
from loraflow.report.captions import summary, write_captions
from loraflow.report.figures import (
    plot_effects,
    plot_headline,
    plot_heatmap,
    plot_losses,
    plot_pareto,
    plot_ranking,
    plot_tradeoff,
)
from loraflow.report.pages import samples_html, sortable_table_html
from loraflow.report.rows import by_run, metric_column
from loraflow.report.settings import ReportInputs, ReportOutputs, ReportSettings

log = logging.getLogger(__name__)


def make_report(inputs: ReportInputs, outputs: ReportOutputs, settings: ReportSettings = ReportSettings()) -> None:
    """Report stage entry point. `train_logs` and `samples` are matched to runs by their run directory."""
    i, o, metric = inputs, outputs, settings.metric
    table = pd.read_csv(i.comparison)
    column = metric_column(metric)
    eff = (
        pd.read_csv(i.effects)
        if i.effects and Path(i.effects).is_file() and Path(i.effects).stat().st_size > 1
        else pd.DataFrame()
    )
    pts = pd.read_csv(i.points) if i.points and Path(i.points).is_file() and Path(i.points).stat().st_size > 1 else None
    logs = by_run(i.train_logs, None)
    plot_losses(logs, o.out_losses)
    plot_heatmap(table, column, o.out_heatmap)
    plot_pareto(table, column, o.out_pareto)
    best = table.loc[table["best"].fillna("").str.startswith("best"), "run"]
    sample_files = by_run(i.samples, None)
    best_run = best.iloc[0] if len(best) else next(iter(sample_files))
    write_text(o.out_samples, samples_html(sample_files[best_run], best_run, settings.n_samples))
    if o.out_ranking:
        plot_ranking(table, column, o.out_ranking)
    if o.out_effects:
        plot_effects(table, eff, pts, column, o.out_effects)
    if o.out_tradeoff:
        plot_tradeoff(table, column, o.out_tradeoff)
    if o.out_headline:
        s = summary(table, eff, column)
        plot_headline(table, eff, column, "\n".join(v for v in (s["run"], s["sure"]) if v), o.out_headline)
    if o.out_table_html:
        write_text(
            o.out_table_html,
            sortable_table_html(table, f"Comparison: one row per run; best chosen on validation by {metric}"),
        )
    if o.out_captions:
        write_captions(o.out_captions, table, eff, column, len(logs), o.out_headline)
    log.info("report figures written; best run %s", best_run)
