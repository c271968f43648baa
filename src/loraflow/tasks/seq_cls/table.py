"""Table stage of task seq_cls: one row per run plus the two baselines, best run chosen on validation.

The best run is chosen by `classify.best_metric` on the validation split (`val_accuracy` /
`val_macro_f1`); test accuracy and macro-F1 are reported for every run, held out, with 95 % paired
bootstrap intervals over the test predictions (`predictions.jsonl`, matched by row id), the
difference to the best run with a p-value, and every run not significantly worse marked "tied for
best" (loraflow.report.stats). results/comparison.csv holds every column; comparison.md a quality table
(val/test accuracy, macro-F1, per-class F1, accuracy by script) and a cost table, under a headline
naming the best run next to the baselines, so the table shows what LoRA adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from loraflow.io import atomic_path, read_json, read_jsonl, write_text
from loraflow.report import stats as st
from loraflow.report.markdown import format_p, to_markdown
from loraflow.report.rows import by_run
from loraflow.report.settings import ClassifierTableInputs, ClassifierTableSettings

BASELINES = {
    "majority": "always the most frequent training label",
    "untrained_head": "base encoder + seeded, untrained head",
}
METRIC_COLUMN = {"macro_f1": "macro_f1", "accuracy": "test_accuracy"}
VAL_COLUMN = {"macro_f1": "val_macro_f1", "accuracy": "val_accuracy"}
COST = [
    "run",
    "trainable_params",
    "trainable_pct",
    "adapter_mb",
    "train_time_s",
    "peak_memory_mb",
    "best_step",
    "final_train_loss",
]


def metric_columns(m: dict) -> dict:
    """Quality columns from an eval.json: val/test accuracy, test macro-F1, per-class F1, by script."""
    test = m["test"]
    cols = {
        "val_accuracy": m["val"]["accuracy"],
        "val_macro_f1": m["val"]["macro_f1"],
        "test_accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
    }
    cols.update({f"f1_{label}": c["f1"] for label, c in test["per_class"].items()})
    cols.update({f"test_acc_{script}": s["accuracy"] for script, s in test.get("accuracy_by_script", {}).items()})
    return cols


def run_row(name: str, hp: dict, stats: dict, metrics: dict) -> dict:
    return {
        "run": name,
        "method": hp.get("method", "lora"),
        "r": hp["r"],
        "alpha": hp["lora_alpha"],
        "targets": hp["targets"],
        **metric_columns(metrics),
        **{k: stats[k] for k in COST[1:]},
    }


def build_table(
    baseline_metrics: Sequence[str], train_stats, metrics, runs: dict[str, dict], best_metric: str = "macro_f1"
) -> pd.DataFrame:
    """Baseline eval files are named <results>/baselines/<name>/eval.json; per-run files are matched to
    `runs` by their run directory (runs/<run>/...). The best run is chosen on validation."""
    rows = [{"run": Path(p).parent.name, **metric_columns(read_json(p))} for p in baseline_metrics]
    stats, evals = by_run(train_stats, list(runs)), by_run(metrics, list(runs))
    for name, hp in runs.items():
        rows.append(run_row(name, hp, read_json(stats[name]), read_json(evals[name])))
    df = pd.DataFrame(rows)
    grid = ["run", "method", "r", "alpha", "targets"]
    df = df[grid + [c for c in df.columns if c not in grid]]
    is_run = ~df["run"].isin(list(BASELINES))
    df.insert(1, "best", "")
    df.loc[df.loc[is_run, VAL_COLUMN[best_metric]].idxmax(), "best"] = f"best ({best_metric})"
    return df


def _class_stats(rows: list[dict], labels: list[str]) -> np.ndarray:
    """Per-row (correct, 1, then tp, fp, fn for every class): sums give accuracy and macro-F1."""
    out = np.zeros((len(rows), 2 + 3 * len(labels)))
    for k, r in enumerate(rows):
        out[k, 0], out[k, 1] = float(r["pred"] == r["label"]), 1.0
        for c, label in enumerate(labels):
            out[k, 2 + 3 * c] = r["pred"] == label and r["label"] == label
            out[k, 3 + 3 * c] = r["pred"] == label and r["label"] != label
            out[k, 4 + 3 * c] = r["pred"] != label and r["label"] == label
    return out


def _macro_f1(sums: np.ndarray) -> np.ndarray:
    tp, fp, fn = sums[..., 2::3], sums[..., 3::3], sums[..., 4::3]
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), np.nan)
    return 100 * np.nanmean(f1, axis=-1)


METRICS = {
    "test_accuracy": st.Metric("accuracy", lambda s: 100 * s[..., 0] / np.maximum(s[..., 1], 1e-12)),
    "macro_f1": st.Metric("macro_f1", _macro_f1),
}


def add_intervals(
    df: pd.DataFrame,
    predictions: dict[str, str],
    best_metric: str,
    n_resamples: int = 1000,
    seed: int = 42,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Bootstrap intervals of test accuracy and macro-F1 over the test rows shared by every run and
    baseline (matched by row id), the difference to the best run, and the tied-for-best marks."""
    preds = {name: {r["id"]: r for r in read_jsonl(p)} for name, p in predictions.items() if Path(p).is_file()}
    if not preds:
        return df
    ids = [i for i in next(iter(preds.values())) if all(i in p for p in preds.values())]
    labels = sorted(
        {p[i]["label"] for p in preds.values() for i in ids} | {p[i]["pred"] for p in preds.values() for i in ids}
    )
    counts = st.resample_counts(len(ids), n_resamples, seed)
    reps = {}
    for name, p in preds.items():
        stats = _class_stats([p[i] for i in ids], labels)
        reps[name] = {m: st.replicates(metric, stats, counts) for m, metric in METRICS.items()}
    column = METRIC_COLUMN[best_metric]
    df.insert(2, "tied", "")
    best = df.loc[df["best"] != "", "run"]
    best = best.iloc[0] if len(best) else None
    for idx, name in df["run"].items():
        if name not in reps:
            continue
        for m in METRICS:
            df.loc[idx, [f"{m}_lo", f"{m}_hi"]] = st.interval(reps[name][m][1], confidence)
        if best in reps and name != best and name not in BASELINES:
            c = st.compare(reps[name][column], reps[best][column], confidence)
            df.loc[idx, ["vs_best", "vs_best_lo", "vs_best_hi", "vs_best_p"]] = [c.diff, c.lo, c.hi, c.p]
            if c.hi >= 0:
                df.loc[idx, "tied"] = "tied for best"
    df.attrs["bootstrap"] = (
        f"paired bootstrap over the {len(ids)} test rows, {n_resamples:,} resamples, {100 * confidence:g} % intervals, "
        f"seed {seed}"
    )
    return df


def headline(df: pd.DataFrame, best_metric: str) -> str:
    best = df[df["best"].str.startswith("best")].iloc[0]
    base = df.set_index("run")

    def ci(m: str) -> str:
        if f"{m}_lo" in best and not pd.isna(best[f"{m}_lo"]):
            return f" [{best[m + '_lo']:.2f}, {best[m + '_hi']:.2f}]"
        return ""

    text = (
        f"Best run by `{best_metric}`: **{best['run']}** (chosen on validation: {VAL_COLUMN[best_metric]} "
        f"{best[VAL_COLUMN[best_metric]]:.2f}). Held-out test accuracy {best['test_accuracy']:.2f} "
        f"%{ci('test_accuracy')}, macro-F1 {best['macro_f1']:.2f}{ci('macro_f1')}"
    )
    known = [f"{name} {base.loc[name, 'test_accuracy']:.2f} %" for name in BASELINES if name in base.index]
    text += f" (baselines: {', '.join(known)})." if known else "."
    tied = df[df["tied"] == "tied for best"] if "tied" in df else df.iloc[0:0]
    if "bootstrap" in df.attrs:
        metric = METRIC_COLUMN[best_metric]
        if len(tied):
            items = ", ".join(
                f"{r.run} ({r.vs_best:+.2f} [{r.vs_best_lo:.2f}, {r.vs_best_hi:.2f}], {format_p(r.vs_best_p)})"
                for r in tied.itertuples()
            )
            text += (
                f"\n\n**Tied for best** (test {metric} not significantly worse; {df.attrs['bootstrap']}): {items}. "
                "The data cannot separate these runs."
            )
        else:
            text += f"\n\nEvery other run is significantly worse on test {metric} ({df.attrs['bootstrap']})."
    return text


def write_comparison(
    inputs: ClassifierTableInputs,
    out_csv: str,
    out_md: str,
    runs: dict[str, dict],
    settings: ClassifierTableSettings = ClassifierTableSettings(),
) -> pd.DataFrame:
    """Stage entry point: comparison.csv and comparison.md (also printed). `predictions` (runs/<run>/
    predictions.jsonl) and `baseline_predictions` enable the bootstrap intervals."""
    best_metric, boot = settings.best_metric, settings.bootstrap
    df = build_table(inputs.baseline_metrics, inputs.train_stats, inputs.metrics, runs, best_metric)
    if inputs.predictions:
        paths = {**by_run(inputs.baseline_predictions), **by_run(inputs.predictions, list(runs))}
        df = add_intervals(df, paths, best_metric, boot.bootstrap_samples, boot.seed, boot.confidence)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    per_class = [c for c in df.columns if c.startswith("f1_")]
    hidden = {
        *COST[1:],
        "test_accuracy_lo",
        "test_accuracy_hi",
        "macro_f1_lo",
        "macro_f1_hi",
        "vs_best_lo",
        "vs_best_hi",
    }
    quality = df[[c for c in df.columns if c not in hidden and (c not in per_class or len(per_class) <= 4)]].copy()
    for m in ("test_accuracy", "macro_f1"):
        if f"{m}_lo" in df:
            quality[m] = [
                f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if not pd.isna(lo) else f"{v:.2f}"
                for v, lo, hi in zip(df[m], df[f"{m}_lo"], df[f"{m}_hi"])
            ]
    if "vs_best" in df:
        quality["vs_best"] = [
            "" if pd.isna(d) else f"{d:+.2f} [{lo:.2f}, {hi:.2f}]"
            for d, lo, hi in zip(df["vs_best"], df["vs_best_lo"], df["vs_best_hi"])
        ]
    notes = "; ".join(f"`{k}` = {v}" for k, v in BASELINES.items())
    md = (
        f"# LoRA text classification\n\n{headline(df, best_metric)}\n\nBaselines: {notes}. Accuracy, macro-F1 and "
        "per-class F1 in %; `val_*` on the validation split (they choose the best run), the rest on the test split "
        "(held out, reported only; brackets: 95 % paired-bootstrap intervals). Every column is in `comparison.csv`.\n\n"
        f"## Quality\n\n{to_markdown(quality)}\n## Cost\n\n"
        f"{to_markdown(df[~df['run'].isin(list(BASELINES))][COST].astype({'best_step': int}))}"
    )
    write_text(out_md, md)
    print(md, flush=True)
    return df
