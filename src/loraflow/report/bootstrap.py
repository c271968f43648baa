"""The paired bootstrap of the table: per-row scores (`runs/<run>/scores.jsonl`, written by the evaluate
stage) into replicates of every metric of every system on shared rows, intervals, differences to the
base model and to the best run with p-values (loraflow.report.stats), the tied-for-best marks, and
retention against the base on the items it answers correctly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from loraflow.evaluate.retention import retention_part
from loraflow.io import read_jsonl
from loraflow.report import stats as st
from loraflow.report.rows import CI_METRICS, lower_is_better, metric_column


def _score_lines(path: str | None) -> list[dict]:
    return read_jsonl(path) if path and Path(path).is_file() else []


def _stats_matrix(lines: dict[str, dict], ids: list[str], metric: str) -> np.ndarray:
    """(n, k) per-row sufficient statistics of `metric` on rows `ids` (see loraflow.report.stats)."""
    if metric in ("test_loss", "perplexity"):
        return np.array([[lines[i]["loss_sum"], lines[i]["tokens"]] for i in ids], dtype=np.float64).reshape(
            len(ids), 2
        )
    if metric == "bleu":
        return np.array([lines[i]["bleu_stats"] for i in ids], dtype=np.float64)
    key = "correct" if metric == "retention" else metric
    return np.array(
        [[lines[i][key], 1.0] if lines[i].get(key) is not None else [0.0, 0.0] for i in ids], dtype=np.float64
    ).reshape(len(ids), 2)


def _metric(metric: str) -> st.Metric:
    return {"test_loss": st.LOSS, "perplexity": st.PERPLEXITY, "bleu": st.BLEU}.get(metric) or st.mean_metric(metric)


class Bootstrap:
    """Paired replicates of every metric of every system (runs and `base`) on shared rows of one split
    (`test` by default; `val` for choosing on validation). `groups` ({row id: group}) switches to the
    clustered bootstrap when every shared row has a group. Retention is measured on the items the base
    answers correctly, per part: `retention` on the test part, `val_retention` on the validation part."""

    def __init__(
        self,
        scores: dict[str, str],
        n_resamples: int = 1000,
        seed: int = 42,
        confidence: float = 0.95,
        groups: dict[str, str] | None = None,
        split: str = "test",
    ):
        self.n, self.seed, self.confidence, self.split = n_resamples, seed, confidence, split
        self.groups = groups or {}
        self.group_key: str | None = None  # the row field the groups come from (for the report)
        self.lines = {name: _score_lines(p) for name, p in scores.items()}
        self.lines = {k: v for k, v in self.lines.items() if v}
        rows = lambda name, s: {r["id"]: r for r in self.lines[name] if r.get("split", "test") == s}  # noqa: E731
        self.test = {name: rows(name, split) for name in self.lines}
        self.retention = {name: rows(name, "retention") for name in self.lines}
        systems = [name for name in self.test if self.test[name]]
        common = set.intersection(*(set(self.test[s]) for s in systems)) if systems else set()
        order = (
            [i for i in self.test[systems[0]] if i in common] if systems else []
        )  # stable: the first system's row order
        self.loss_ids = [i for i in order if all("loss_sum" in self.test[s][i] for s in systems)]
        self.gen_ids = [i for i in order if all("rougeL" in self.test[s][i] for s in systems)]
        self.cache: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
        self._counts: dict[tuple[str, ...], np.ndarray] = {}

    def clustered(self, ids: list[str]) -> bool:
        return bool(ids) and bool(self.groups) and all(i in self.groups for i in ids)

    def counts(self, ids: list[str]) -> np.ndarray:
        """(B, len(ids)) multiplicities, the same for every system (paired): whole groups resampled when clustered."""
        key = tuple(ids)
        if key not in self._counts:
            self._counts[key] = (
                st.cluster_counts([self.groups[i] for i in ids], self.n, self.seed)
                if self.clustered(ids)
                else st.resample_counts(len(ids), self.n, self.seed)
            )
        return self._counts[key]

    def ids(self, metric: str) -> list[str]:
        return self.loss_ids if metric in ("test_loss", "perplexity") else self.gen_ids

    def has(self, name: str, metric: str) -> bool:
        if metric in RETENTION_PARTS:
            return bool(self.retention.get(name))
        key = {"test_loss": "loss_sum", "perplexity": "loss_sum", "bleu": "bleu_stats"}.get(metric, metric)
        ids = self.ids(metric)
        return (
            bool(self.test.get(name))
            and bool(ids)
            and all(i in self.test[name] for i in ids)
            and any(self.test[name][i].get(key) is not None for i in ids)
        )

    def row_stats(self, name: str, metric: str) -> tuple[list[str], np.ndarray] | None:
        """(row ids, (n, k) per-row sufficient statistics) of `metric` for system `name`; None without scores."""
        if not self.has(name, metric):
            return None
        if metric in RETENTION_PARTS:
            ids = self.retention_ids(name, RETENTION_PARTS[metric])
            return (ids, _stats_matrix(self.retention[name], ids, "retention")) if ids else None
        ids = self.ids(metric)
        stats = _stats_matrix(self.test[name], ids, metric)
        if metric != "bleu" and stats[:, -1].sum() == 0:
            return None
        return ids, stats

    def reps(self, name: str, metric: str) -> tuple[float, np.ndarray] | None:
        """(point estimate, replicates) of `metric` for system `name`; None when it has no such scores."""
        key = (name, metric)
        if key not in self.cache:
            found = self.row_stats(name, metric)
            if found is None:
                return None
            ids, stats = found
            if metric in RETENTION_PARTS:  # each run is asked its own items: its own (seeded) resample of them
                counts = st.resample_counts(len(ids), self.n, self.seed)
                self.cache[key] = st.replicates(st.mean_metric("retention"), stats, counts)
            else:
                self.cache[key] = st.replicates(_metric(metric), stats, self.counts(ids))
        return self.cache[key]

    def retention_ids(self, name: str, part: str | None = "test") -> list[str]:
        """The items a run was asked: those the base answered correctly, in `part` (val, test; None = both)."""
        base = self.retention.get("base", {})
        correct = [i for i, r in base.items() if r.get("correct")]
        if name != "base":
            own = self.retention.get(name, {})
            correct = [i for i in correct if i in own] if base else list(own)
        lines = {**base, **self.retention.get(name, {})}
        return [i for i in correct if part is None or item_part(lines[i]) == part]

    def compare(self, a: str, b: str, metric: str) -> st.Comparison | None:
        ra, rb = self.reps(a, metric), self.reps(b, metric)
        if ra is None or rb is None:
            return None
        return st.compare(ra, rb, self.confidence)


RETENTION_PARTS = {"retention": "test", "val_retention": "val"}


def item_part(line: dict) -> str:
    """The part (val, test) of a retention line: as the evaluate stage wrote it, else from its id."""
    return line.get("part") or retention_part(line["id"])


def add_intervals(df: pd.DataFrame, boot: Bootstrap, best_metric: str) -> pd.DataFrame:
    """CI columns for every test metric, differences to base and best for the selection metric,
    `tied for best` marks, and retention against base."""
    metric = metric_column(best_metric)
    ok = df["status"] == "ok"
    if "tied" not in df:
        df.insert(df.columns.get_loc("best") + 1, "tied", "")
    for m in CI_METRICS:
        if m not in df:
            continue
        for idx in df.index[ok]:
            r = boot.reps(df.at[idx, "run"], m)
            if r is not None:
                df.loc[idx, [f"{m}_lo", f"{m}_hi"]] = st.interval(r[1], boot.confidence)
    best = df.index[df["best"] != ""]
    best_run = df.at[best[0], "run"] if len(best) else None
    lower = lower_is_better(metric)
    for idx in df.index[ok & (df["run"] != "base")]:
        name = df.at[idx, "run"]
        c = boot.compare(name, "base", metric)
        if c is not None:
            df.loc[idx, ["vs_base", "vs_base_lo", "vs_base_hi", "vs_base_p"]] = [c.diff, c.lo, c.hi, c.p]
        if best_run is None or name == best_run:
            continue
        c = boot.compare(name, best_run, metric)
        if c is not None:
            df.loc[idx, ["vs_best", "vs_best_lo", "vs_best_hi", "vs_best_p"]] = [c.diff, c.lo, c.hi, c.p]
            worse = c.hi < 0 if not lower else c.lo > 0
            if (
                not worse and df.get("floor", pd.Series("", index=df.index)).get(idx) != "below floor"
            ):  # rejected for forgetting
                df.loc[idx, "tied"] = "tied for best"
    add_retention(df, boot)
    return df


def add_retention(df: pd.DataFrame, boot: Bootstrap) -> pd.DataFrame:
    """Retention of every finished run with intervals and its change against the base: `retention` on
    the test part of the retention set (reported), `val_retention` on the validation part (may choose)."""
    for metric, part in RETENTION_PARTS.items():
        base = boot.reps("base", metric)
        if base is None:
            continue
        for idx in df.index[df["status"] == "ok"]:
            name = df.at[idx, "run"]
            r = boot.reps(name, metric)
            if r is None:
                continue
            lo, hi = st.interval(r[1], boot.confidence)
            df.loc[idx, [metric, f"{metric}_lo", f"{metric}_hi", f"{metric}_items"]] = [
                r[0],
                lo,
                hi,
                len(boot.retention_ids(name, part)),
            ]
            if name != "base" and part == "test":
                c = st.compare(r, (base[0], np.full(boot.n, base[0])), boot.confidence)
                df.loc[idx, ["d_retention", "d_retention_lo", "d_retention_hi", "d_retention_p"]] = [
                    c.diff,
                    c.lo,
                    c.hi,
                    c.p,
                ]
    return df
