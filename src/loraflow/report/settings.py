"""Settings and file groups of the table and report stages, as frozen dataclasses.

A rule passes them flat (its named inputs, outputs and params `hp`); loraflow.binding builds these
types from the flat names, so a field name here is the rule's name for that file or setting. This
module imports nothing heavy: the workflow may read the fields when it parses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Per-run files: paths laid out as <results>/runs/<run>/<file>, or {run: path} (see report.rows.by_run).
RunFiles = Sequence[str] | Mapping[str, str]


@dataclass(frozen=True)
class Selection:
    """The forgetting-aware choice (loraflow.report.selection): `select` best | pareto, and the
    validation retention a run must keep (percent; 0 or None: no floor)."""

    select: str = "best"
    retention_floor: float | None = None

    @property
    def floor(self) -> float | None:
        return self.retention_floor if self.retention_floor else None


@dataclass(frozen=True)
class BootstrapSettings:
    """The paired bootstrap behind every interval and p-value of a table."""

    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 42


@dataclass(frozen=True)
class TableSettings:
    """How the causal-LM table chooses and scores: the metric that picks the best run on validation,
    the bootstrap, the forgetting-aware choice and the row groups of the clustered bootstrap."""

    best_metric: str = "rougeL"
    bootstrap: BootstrapSettings = BootstrapSettings()
    selection: Selection = Selection()
    cluster_by: str = "auto"


@dataclass(frozen=True)
class TableInputs:
    """What the causal-LM table reads. `scores` (runs/<run>/scores.jsonl) with `base_scores` enable the
    intervals; `lm_eval` with `base_lm_eval` add the lm-eval-harness columns; `test_rows` (the test split)
    gives the row groups; `halving` (search/select<k>.json, the last cut) the rows of pruned points."""

    base_metrics: str
    train_stats: RunFiles = ()
    metrics: RunFiles = ()
    merge_checks: RunFiles = ()
    rank_summaries: RunFiles = ()
    scores: RunFiles = ()
    base_scores: str | None = None
    lm_eval: RunFiles = ()
    base_lm_eval: str | Sequence[str] | None = None
    test_rows: str | None = None
    halving: str | None = None


@dataclass(frozen=True)
class TableOutputs:
    """What the causal-LM table writes: comparison.{csv,md}, the per-point table, the main effects and
    best.json (the last three optional)."""

    out_csv: str
    out_md: str
    out_points_csv: str | None = None
    out_effects_csv: str | None = None
    out_best: str | None = None


@dataclass(frozen=True)
class ClassifierTableInputs:
    """What the classification table reads: the baselines' and runs' eval.json and train_stats.json;
    `predictions` (runs/<run>/predictions.jsonl) with `baseline_predictions` enable the intervals."""

    baseline_metrics: Sequence[str]
    train_stats: RunFiles = ()
    metrics: RunFiles = ()
    predictions: RunFiles = ()
    baseline_predictions: RunFiles = ()


@dataclass(frozen=True)
class ClassifierTableSettings:
    """The metric that picks the best classifier on validation (accuracy | macro_f1), and the bootstrap."""

    best_metric: str = "macro_f1"
    bootstrap: BootstrapSettings = BootstrapSettings()


@dataclass(frozen=True)
class ReportInputs:
    """What the report's figures read: the table and its companions, and the per-run training logs and
    samples (matched to runs by their run directory)."""

    comparison: str
    train_logs: RunFiles = ()
    samples: RunFiles = ()
    effects: str | None = None
    points: str | None = None


@dataclass(frozen=True)
class ReportOutputs:
    """The report's figures and pages; those left None are not drawn."""

    out_losses: str
    out_heatmap: str
    out_pareto: str
    out_samples: str
    out_headline: str | None = None
    out_ranking: str | None = None
    out_effects: str | None = None
    out_tradeoff: str | None = None
    out_captions: str | None = None
    out_table_html: str | None = None


@dataclass(frozen=True)
class ReportSettings:
    """The metric the figures show (the table's best_metric) and how many before/after samples."""

    metric: str = "rougeL"
    n_samples: int = 8
