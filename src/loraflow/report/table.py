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
by its position in a list. The pieces: rows from result files (loraflow.report.rows), the bootstrap
(loraflow.report.bootstrap), seeds and main effects (loraflow.report.effects), Markdown
(loraflow.report.markdown); the table after a failed workflow is loraflow.report.partial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import pandas as pd

from loraflow.io import atomic_path, write_json, write_text
from loraflow.report import certainty
from loraflow.report.bootstrap import Bootstrap, add_intervals, add_retention
from loraflow.report.clusters import row_groups
from loraflow.report.effects import by_point, effects_table
from loraflow.report.headline import headline
from loraflow.report.markdown import (
    COST,
    comparisons_markdown,
    effects_markdown,
    grid_markdown,
    lr_note,
    points_markdown,
    quality_markdown,
    retention_markdown,
    to_markdown,
    unreduced_note,
)
from loraflow.report.methods import methods_line, methods_markdown, methods_table
from loraflow.report.rows import LABEL, add_lm_eval, build_table, by_run, metric_column
from loraflow.report.selection import apply_selection, pareto_markdown, selection_lines
from loraflow.report.settings import Selection, TableInputs, TableOutputs, TableSettings


def write_comparison(
    inputs: TableInputs, outputs: TableOutputs, runs: dict[str, dict], settings: TableSettings = TableSettings()
) -> pd.DataFrame:
    """Table stage entry point: comparison.csv and comparison.md (also printed), and the optional
    per-point table, main effects and best.json (see TableInputs, TableOutputs, TableSettings)."""
    pruned = []
    if inputs.halving:
        from loraflow.report.halving import pruned_rows

        pruned = pruned_rows(inputs.halving, runs)
        runs = {name: hp for name, hp in runs.items() if name not in {row["run"] for row in pruned}}
    best_metric = settings.best_metric
    df = build_table(
        inputs.base_metrics,
        inputs.train_stats,
        inputs.metrics,
        inputs.merge_checks,
        runs,
        best_metric,
        inputs.rank_summaries,
        pruned,
    )
    if inputs.lm_eval and inputs.base_lm_eval:
        df = add_lm_eval(df, {"base": cast(str, inputs.base_lm_eval), **by_run(inputs.lm_eval, list(runs))})
    scoring = Scoring.of(settings, inputs.test_rows)
    paths = (
        {"base": inputs.base_scores, **by_run(inputs.scores, list(runs))}
        if inputs.base_scores and inputs.scores
        else None
    )
    df, boot = select_and_score(df, best_metric, paths, scoring)
    write_tables(
        df, outputs.out_csv, outputs.out_md, best_metric, outputs.out_points_csv, boot, outputs.out_effects_csv
    )
    if outputs.out_best:
        write_best(
            df,
            best_metric,
            outputs.out_best,
            split="val" if df.attrs.get("best_source", "").startswith("validation") else "test",
        )
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

    @classmethod
    def of(cls, settings: TableSettings, test_rows: str | None) -> Scoring:
        """The scoring `settings` ask for, with the row groups of the test split `test_rows`."""
        groups, key = row_groups(test_rows, settings.cluster_by)
        b = settings.bootstrap
        return cls(b.bootstrap_samples, b.confidence, b.seed, settings.selection, groups, key)


def select_and_score(
    df: pd.DataFrame, best_metric: str, paths: dict[str, str] | None, scoring: Scoring
) -> tuple[pd.DataFrame, Bootstrap | None]:
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


def write_tables(
    df: pd.DataFrame,
    out_csv: str,
    out_md: str,
    best_metric: str,
    out_points_csv: str | None = None,
    boot: Bootstrap | None = None,
    out_effects_csv: str | None = None,
) -> str:
    methods = methods_table(df, best_metric, boot)  # flags each method's best-rate run (column method_best)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    points = by_point(df, best_metric, boot)
    metric = metric_column(best_metric)
    power = certainty.power_summary(df, boot, metric) if boot is not None else None
    said = {
        "choice": selection_lines(df, best_metric),
        "sure": certainty.certainty_lines(df, power, LABEL.get(metric, metric), boot.n if boot is not None else 0),
    }
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
        notes = (
            "\n`eff_rank`: the largest effective rank of any learned ΔW (rank holding the top configured share of its "
            "energy, see `runs/<run>/rank_analysis.png`); `suggested_r`: the smallest power of two that holds it.\n"
        )
        smaller = df[(df["run"] != "base") & df["suggested_r"].notna() & (df["suggested_r"] < df["r"])]
        if len(smaller):
            notes += (
                "A smaller r would have sufficed for: "
                + ", ".join(f"{r.run} (r={int(r.r)} → {int(r.suggested_r)})" for r in smaller.itertuples())
                + ".\n"
            )
    if "intruders" in df:
        notes += (
            "`intruders`: singular vectors among the top ones of each tuned weight W + ΔW that resemble none "
            "of the base "
            "weight's (intruder dimensions, which go with forgetting; per module in `runs/<run>/rank_analysis.csv`); "
            "`<run>_ri` rows are the same adapters after peft's reduce_intruder_dimension (config "
            "`reduce_intruders`).\n"
        )
    ci_note = (
        "Test figures are held out: they choose nothing. Brackets are 95 % paired-bootstrap intervals over test rows; "
        "`vs base` / `vs best` are paired differences with their interval and two-sided bootstrap p-value; "
        "`tied for best` = not significantly worse than the best run (differences are not corrected for "
        "multiple comparisons).\n"
        if boot is not None
        else "Test figures are held out: they choose nothing. (No per-row scores: no intervals.)\n"
    )
    md = (
        f"# LoRA comparison\n\n{headline(df, best_metric, boot, effects, points, said)}\n\n"
        f"The `base` row is the untouched base model. Every column is in `comparison.csv`.\n\n"
        f"## Selection (validation) and differences (test)\n\n{comparisons_markdown(df, best_metric)}"
        f"\n## Quality (test split, held out)\n\n{ci_note}\n{quality_markdown(df, best_metric)}"
    )
    if "retention" in df and df["retention"].notna().any():
        acc = df.loc[df["run"] == "base", "retention_base_acc"].iloc[0] if "retention_base_acc" in df else math.nan
        md += (
            "\n## Retention (what tuning cost)\n\nShare of the built-in general questions (arithmetic, unit "
            "conversion, world "
            "facts, simple instructions; English and Chinese) that the base model answers correctly which "
            "the run still answers "
            f"correctly. The base is 100 by construction (it answers {acc:.1f} % of all the items it was asked).\n\n"
            + retention_markdown(df)
        )
    md += unreduced_note(df)
    pareto = pareto_markdown(df, best_metric)
    if pareto:
        md += "\n## Learned vs forgotten (Pareto set, validation)\n\n" + pareto
    if len(methods):
        md += "\n## Methods at their best rate\n\n" + methods_markdown(methods, best_metric)
    if len(effects):
        md += "\n## Which knob mattered (main effects, test)\n\n" + effects_markdown(effects)
    lm = [c for c in df.columns if c.startswith("lm_") and not c.endswith("_vs_base")]
    if lm:
        md += "\n## lm-eval-harness (general benchmarks)\n\n" + to_markdown(
            df[["run", *[c for c in df.columns if c.startswith("lm_")]]]
        )
    md += f"\n## Grid\n\n{lr_note(df)}\n{grid_markdown(df)}\n## Cost\n\n{to_markdown(cost)}{notes}"
    if points is not None:
        best_point = points.loc[points["best"].str.startswith("best"), "point"].iloc[0]
        md += (
            f"\n## Across seeds (mean ± std)\n\nBest grid point by mean `{best_metric}`: **{best_point}** "
            f"(chosen on {points.attrs.get('best_source', 'validation')}). "
            f"Intervals carry the variance across seeds and across test rows.\n\n{points_markdown(points, best_metric)}"
        )
    write_text(out_md, md)
    print(md, flush=True)
    return md
