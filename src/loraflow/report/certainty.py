"""How sure the table is, in the words a user needs: P(best), the detectable effect, the rows to separate.

- **P(best)**: for every finished run, the share of the paired bootstrap replicates of the test split
  in which it has the best selection metric (ties shared). Paired: every replicate resamples the same
  rows (or groups) for all runs, so a run that beats another on every row wins every replicate.
- **Minimum detectable effect** of the test split at its size: 80 % power, two-sided alpha 0.05, from
  the spread of the paired per-row differences of the top two runs on test (loraflow.report.power;
  cluster-robust when the rows come in groups). BLEU and perplexity are not sums over rows: their
  standard error is that of the bootstrap replicates of the difference.
- **To separate the top two** when their difference is not significant: the test rows like these
  needed to detect the observed difference at that power, and with seeds, the seeds per point.

Test figures choose nothing: these say how far the held-out evidence goes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from loraflow.report import power as pw
from loraflow.report import stats as st
from loraflow.report.rows import lower_is_better

RATIO_METRICS_EXCLUDED = ("bleu", "perplexity")


def add_prob_best(df: pd.DataFrame, boot, metric: str) -> pd.DataFrame:
    """Column `p_best`: each finished run's bootstrap probability of the best test `metric`."""
    runs = df[(df["run"] != "base") & (df["status"] == "ok")]
    reps = {idx: boot.reps(df.at[idx, "run"], metric) for idx in runs.index}
    reps = {idx: r for idx, r in reps.items() if r is not None}
    if not reps:
        return df
    probs = st.prob_best(np.stack([r[1] for r in reps.values()]), lower_is_better(metric))
    df.loc[list(reps), "p_best"] = probs
    return df


def _units(df: pd.DataFrame, metric: str) -> dict[str, list[str]]:
    """Finished runs with a test figure, grouped by grid point (a point's seeds together; a run is its
    own point without seeds), best point first by its mean test `metric`."""
    runs = df[(df["run"] != "base") & (df["status"] == "ok") & df[metric].notna()] if metric in df else df.iloc[0:0]
    key = runs["point"] if "point" in runs else runs["run"]
    means = runs.groupby(key, sort=False)[metric].mean().sort_values(ascending=lower_is_better(metric))
    return {point: list(runs.loc[key == point, "run"]) for point in means.index}


def paired_se(boot, a: list[str], b: list[str], metric: str) -> tuple[float, int, int | None]:
    """(standard error of the paired difference of points a - b on test from the row-to-row spread, rows,
    groups or None); a point's per-row values are the mean over its seeds."""
    ids = boot.row_stats(a[0], metric)[0]
    groups = [boot.groups[i] for i in ids] if boot.clustered(ids) else None
    n_groups = len(set(groups)) if groups else None
    if metric in RATIO_METRICS_EXCLUDED:
        d = np.mean([boot.reps(r, metric)[1] for r in a], 0) - np.mean([boot.reps(r, metric)[1] for r in b], 0)
        return float(np.nanstd(d, ddof=1)), len(ids), n_groups
    per_row = lambda names: np.mean([pw.influence(boot.row_stats(r, metric)[1]) for r in names], 0)  # noqa: E731
    return pw.standard_error(per_row(a) - per_row(b), groups), len(ids), n_groups


def _seed_sd(df: pd.DataFrame, runs: list[str], metric: str) -> float:
    values = df.loc[df["run"].isin(runs), metric].dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def power_summary(df: pd.DataFrame, boot, metric: str, settings: pw.PowerSettings = pw.PowerSettings()) -> dict | None:
    """The top two grid points on test (runs, without seeds), their difference, whether the split separates
    them (with seeds: the two-level bootstrap over rows and seeds), its minimum detectable effect, and the
    rows (and, with seeds, seeds per point) needed to separate them; None with fewer than two."""
    units = _units(df, metric)
    if len(units) < 2:
        return None
    (a, runs_a), (b, runs_b) = list(units.items())[:2]
    if any(boot.row_stats(r, metric) is None for r in (*runs_a, *runs_b)):
        return None
    se, n, groups = paired_se(boot, runs_a, runs_b, metric)
    reps_a = st.seed_average([boot.reps(r, metric) for r in runs_a], boot.n, boot.seed)
    reps_b = st.seed_average([boot.reps(r, metric) for r in runs_b], boot.n, boot.seed)
    c = st.compare(reps_a, reps_b, boot.confidence)
    separated = c.lo > 0 or c.hi < 0
    out = {
        "a": a,
        "b": b,
        "delta": c.diff,
        "rows": n,
        "groups": groups,
        "se": se,
        "mde": pw.mde(se, settings),
        "separated": separated,
        "alpha": settings.alpha,
        "power": settings.power,
        "rows_needed": None,
        "seeds_needed": None,
        "seeds": min(len(runs_a), len(runs_b)),
    }
    if not separated:
        out["rows_needed"] = pw.rows_needed(se, n, c.diff, settings)
        out["seeds_needed"] = pw.seeds_needed(
            _seed_sd(df, runs_a, metric), _seed_sd(df, runs_b, metric), c.diff, settings
        )
    return out


def certainty_lines(df: pd.DataFrame, summary: dict | None, label: str, n_resamples: int) -> list[str]:
    """Headline sentences: P(best) of the runs, the detectable effect, what would separate the top two."""
    lines = []
    if "p_best" in df and df["p_best"].notna().any():
        runs = df[df["p_best"].notna()].sort_values("p_best", ascending=False)
        shown = ", ".join(f"{r.run} {r.p_best:.2f}" for r in runs.head(5).itertuples())
        more = f" (and {len(runs) - 5} more)" if len(runs) > 5 else ""
        scope = (
            ", every finished run, the retention floor aside"
            if "floor" in df and (df["floor"] == "below floor").any()
            else ""
        )
        lines.append(
            f"**How sure**: probability of being the best on test ({label}, share of {n_resamples:,} paired bootstrap "
            f"replicates{scope}): {shown}{more}."
        )
    if summary is None or math.isnan(summary["mde"]):
        return lines
    if summary["se"] == 0:
        return lines + [
            f"The top two on test, {summary['a']} and {summary['b']}, differ by the same amount on every test row "
            f"({summary['delta']:+.2f} {label}): no spread to size a detectable difference from."
        ]
    unit = f"{summary['rows']} test rows" + (f" in {summary['groups']} groups" if summary["groups"] else "")
    what = "grid points (mean over seeds)" if summary["seeds"] > 1 else "runs"
    text = (
        f"With {unit}, the smallest difference the test split detects with {100 * summary['power']:g} % power "
        f"(two-sided alpha {summary['alpha']:g}) is {summary['mde']:.2f} {label}; the top two {what} on test, "
        f"{summary['a']} and {summary['b']}, differ by {summary['delta']:+.2f}"
    )
    if summary["separated"]:
        text += ", which it separates."
    elif abs(summary["delta"]) < summary["mde"] / 4 and summary["rows_needed"]:
        text += (
            f": not separated, and far below what it can detect (about {summary['rows_needed']:,} test rows like these "
            "would be needed; a difference this small rarely matters)."
        )
    elif summary["rows_needed"]:
        unit_needed = "rows like these" + (" (groups alike)" if summary["groups"] else "")
        text += (
            f": not separated. About {summary['rows_needed']:,} test {unit_needed} would separate a difference that "
            "size"
        )
        text += (
            f" from the row-to-row noise, and {summary['seeds_needed']} seeds per point from the spread across seeds."
            if summary.get("seeds_needed")
            else "."
        )
    else:
        text += ": not separated (no difference to detect)."
    return lines + [text]
