"""Uncertainty for the comparison table: paired bootstrap over test rows, seeds and grid axes.

Every metric is a function of per-row sufficient statistics summed over rows: a mean score is
(Σ score, Σ 1); the loss is (Σ NLL, Σ tokens), token-weighted like the stage's own loss; BLEU is
sacrebleu's own per-sentence statistics (hypothesis/reference lengths, n-gram matches and totals)
turned into a corpus score by sacrebleu. A bootstrap resample is a multiset of row indices; all runs
are resampled with the *same* indices (paired), so a difference between two runs on the same rows is
measured against the spread of that difference, not of each score alone. The indices are drawn as in
sacrebleu's paired bootstrap (`numpy.random.default_rng(seed).choice(n, (B, n))`), so for BLEU the
replicates are exactly those of `sacrebleu.significance` with the same seed.

- CI: percentile interval of the replicates (95 % by default).
- Difference a - b: percentile interval of the paired replicate differences, and a two-sided p-value
  p = min(1, 2 (1 + #{d* on the far side of 0}) / (B + 1)), consistent with the interval: the 95 %
  interval excludes 0 exactly when p < 0.05 (up to the discreteness of B).
- Seeds: a grid point's replicate is the mean over its seeds, the seeds themselves resampled with
  replacement (a two-level bootstrap: rows, then seeds), so its interval carries the variance across
  seeds as well as across rows; `seed_ci` adds the classical t-interval over the seed means.
- Main effects: the marginal mean of a metric at each level of a grid axis (the mean over all points
  at that level) and the difference between levels, with the same paired replicates.
- Clusters: where rows come in groups (several questions on one product or about one fact), errors
  within a group are correlated and resampling rows makes intervals too narrow; `cluster_counts`
  resamples whole groups (a row's multiplicity is its group's), still paired across runs.
- Probability of being best: the share of the paired replicates in which a run has the best value
  (ties shared), `prob_best`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

# --- metrics as functions of summed per-row statistics --------------------------------------------


@dataclass(frozen=True)
class Metric:
    """`stats(rows)` gives an (n, k) array; `value(sums)` maps the (..., k) sums to the metric."""

    name: str
    value: Callable[[np.ndarray], np.ndarray]
    lower_is_better: bool = False


def mean_metric(name: str) -> Metric:
    return Metric(name, lambda s: s[..., 0] / np.maximum(s[..., 1], 1e-12))


LOSS = Metric("loss", lambda s: s[..., 0] / np.maximum(s[..., 1], 1e-12), lower_is_better=True)
PERPLEXITY = Metric(
    "perplexity", lambda s: np.exp(np.minimum(s[..., 0] / np.maximum(s[..., 1], 1e-12), 700)), lower_is_better=True
)


@lru_cache(maxsize=4)
def _bleu(tokenize: str):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize)


def bleu_stats(hyps: list[str], refs: list[str], tokenize: str) -> np.ndarray:
    """sacrebleu's per-sentence sufficient statistics, (n, 2 + 2 * max_ngram_order)."""
    return np.asarray(_bleu(tokenize)._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=np.float64).reshape(
        len(hyps), -1
    )


def bleu_from_stats(sums: np.ndarray, tokenize: str = "13a") -> np.ndarray:
    """Corpus BLEU from summed statistics (any leading shape), computed by sacrebleu."""
    sums = np.asarray(sums, dtype=np.float64)
    flat = sums.reshape(-1, sums.shape[-1])
    out = np.array([_bleu(tokenize)._compute_score_from_stats(list(row)).score for row in flat])
    return out.reshape(sums.shape[:-1])


BLEU = Metric("bleu", bleu_from_stats)


# --- resampling ------------------------------------------------------------------------------------


def resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, n) multiplicities of each row in each resample; draws as sacrebleu's paired bootstrap."""
    if n == 0:
        return np.zeros((n_resamples, 0))
    idx = np.random.default_rng(seed).choice(n, size=(n_resamples, n), replace=True)
    flat = (idx + n * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def cluster_counts(groups: list, n_resamples: int, seed: int) -> np.ndarray:
    """(B, n) multiplicities of each row under a clustered bootstrap: the distinct values of `groups`
    (one per row) are resampled with replacement, as rows are by `resample_counts`, and every row of a
    drawn group counts once per draw."""
    codes: dict = {}
    index = np.array([codes.setdefault(g, len(codes)) for g in groups], dtype=np.int64)
    by_group = resample_counts(len(codes), n_resamples, seed)
    return by_group[:, index] if len(index) else np.zeros((n_resamples, 0))


def prob_best(reps: np.ndarray, lower_is_better: bool = False) -> np.ndarray:
    """(k,) probability that each of k systems is the best, from their paired (k, B) replicates: the
    share of replicates in which it has the best value, a tie shared equally among the tied systems."""
    reps = np.asarray(reps, dtype=np.float64)
    values = np.where(np.isnan(reps), -np.inf, -reps if lower_is_better else reps)  # a missing replicate wins nothing
    top = values.max(axis=0)
    wins = np.isfinite(values) & np.isclose(values, top[None, :], rtol=0.0, atol=1e-12)
    return (wins / np.maximum(wins.sum(0), 1)[None, :]).mean(1)


def replicates(metric: Metric, stats: np.ndarray, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """(point estimate, (B,) bootstrap replicates) of `metric` from per-row `stats` (n, k)."""
    stats = np.asarray(stats, dtype=np.float64)
    point = float(metric.value(stats.sum(0)))
    return point, np.asarray(metric.value(counts @ stats), dtype=np.float64)


def interval(reps: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    reps = np.asarray(reps, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if not len(reps):
        return (math.nan, math.nan)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    return float(lo), float(hi)


def p_value(diff_reps: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a paired difference being 0 (see the module docstring)."""
    d = np.asarray(diff_reps, dtype=np.float64)
    d = d[~np.isnan(d)]
    if not len(d):
        return math.nan
    if np.all(d == 0):
        return 1.0
    far = min(int(np.sum(d <= 0)), int(np.sum(d >= 0)))
    return float(min(1.0, 2 * (far + 1) / (len(d) + 1)))


@dataclass
class Comparison:
    diff: float
    lo: float
    hi: float
    p: float


def compare(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray], confidence: float = 0.95) -> Comparison:
    """a - b for two (point, replicates) pairs resampled with the same rows."""
    d = a[1] - b[1]
    lo, hi = interval(d, confidence)
    return Comparison(a[0] - b[0], lo, hi, p_value(d))


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Classical t-interval of the mean over seeds (nan for fewer than two values)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) < 2:
        return (math.nan, math.nan)
    half = t_quantile(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def t_quantile(q: float, df: int) -> float:
    """Quantile of Student's t distribution (q > 0.5), by bisection on its CDF (Simpson's rule)."""
    const = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float) -> float:
        t = np.linspace(0.0, x, 2001)
        f = const * (1 + t * t / df) ** (-(df + 1) / 2)
        return 0.5 + (x / 6000) * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1e3
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def seed_average(run_reps: list[tuple[float, np.ndarray]], n_resamples: int, seed: int) -> tuple[float, np.ndarray]:
    """A grid point's (mean over seeds, replicates): each replicate averages the seeds drawn with
    replacement for that replicate (and each seed's own row-resampled replicate)."""
    k = len(run_reps)
    point = float(np.mean([r[0] for r in run_reps]))
    if k == 1:
        return point, run_reps[0][1]
    reps = np.stack([r[1] for r in run_reps])  # (k, B)
    pick = np.random.default_rng([seed, k]).integers(0, k, size=(n_resamples, k))
    return point, reps[pick, np.arange(n_resamples)[:, None]].mean(1)


# --- main effects ------------------------------------------------------------------------------------


def main_effects(
    points: dict[str, dict], axes: list[str], reps: dict[str, tuple[float, np.ndarray]], confidence: float = 0.95
) -> list[dict]:
    """For each axis with two or more levels: the marginal mean at each level (mean over every point at
    that level) with its interval, and each level's difference to the first (lowest) level with
    interval and p-value. `points`: name -> {axis: level}; `reps`: name -> (point, replicates)."""
    rows = []
    for axis in axes:
        levels = sorted({p[axis] for p in points.values() if p.get(axis) is not None}, key=_sort_key)
        if len(levels) < 2:
            continue
        marginal = {}
        for level in levels:
            names = [n for n, p in points.items() if p.get(axis) == level and n in reps]
            if not names:
                continue
            marginal[level] = (
                float(np.mean([reps[n][0] for n in names])),
                np.mean([reps[n][1] for n in names], axis=0),
                len(names),
            )
        ref = levels[0]
        for level, (mean, r, count) in marginal.items():
            lo, hi = interval(r, confidence)
            row = {"axis": axis, "level": level, "points": count, "mean": mean, "mean_lo": lo, "mean_hi": hi}
            if level != ref and ref in marginal:
                c = compare((mean, r), marginal[ref][:2], confidence)
                row.update({"vs": ref, "effect": c.diff, "effect_lo": c.lo, "effect_hi": c.hi, "p": c.p})
            rows.append(row)
    return rows


def interaction(
    points: dict[str, dict],
    reps: dict[str, tuple[float, np.ndarray]],
    a: str = "r",
    b: str = "alpha",
    confidence: float = 0.95,
) -> dict | None:
    """The 2x2 interaction contrast of axes a and b at their lowest and highest levels:
    (a_hi,b_hi - a_lo,b_hi) - (a_hi,b_lo - a_lo,b_lo), averaged over the other axes; None if either
    axis has a single level or a corner is missing."""
    la = sorted({p[a] for p in points.values() if p.get(a) is not None}, key=_sort_key)
    lb = sorted({p[b] for p in points.values() if p.get(b) is not None}, key=_sort_key)
    if len(la) < 2 or len(lb) < 2:
        return None
    corner = {}
    for x in (la[0], la[-1]):
        for y in (lb[0], lb[-1]):
            names = [n for n, p in points.items() if p.get(a) == x and p.get(b) == y and n in reps]
            if not names:
                return None
            corner[x, y] = (float(np.mean([reps[n][0] for n in names])), np.mean([reps[n][1] for n in names], axis=0))
    (a0, a1), (b0, b1) = (la[0], la[-1]), (lb[0], lb[-1])

    def contrast(i):
        return corner[a1, b1][i] - corner[a0, b1][i] - corner[a1, b0][i] + corner[a0, b0][i]

    lo, hi = interval(contrast(1), confidence)
    return {
        "a": a,
        "b": b,
        "a_levels": (a0, a1),
        "b_levels": (b0, b1),
        "contrast": float(contrast(0)),
        "lo": lo,
        "hi": hi,
        "p": p_value(contrast(1)),
    }


def _sort_key(v):
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))
