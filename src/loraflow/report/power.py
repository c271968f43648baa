"""Power of the test split: the smallest difference it can detect, and the rows or seeds to separate two runs.

A difference between two runs is measured on the same test rows, so its noise is that of the paired
per-row differences. Every metric here is a ratio of per-row sums, Σ a_i / Σ b_i (a mean score has
b_i = 1, the loss sums NLL over tokens); its per-row contribution (influence) is
ψ_i = (a_i - v b_i) / mean(b), and the difference of two runs has contribution ψ_i(A) - ψ_i(B), whose
mean is the observed difference minus itself (0) and whose spread gives the standard error:

- rows independent: se = sd(d) / √n (the textbook paired standard error);
- rows in groups: se² = G/(G-1) Σ_g (Σ_{i in g} d_i)² / n² (the cluster-robust form; G groups).

At two-sided level alpha and power 1 - beta, the minimum detectable effect is
MDE = (z_{1-alpha/2} + z_{1-beta}) · se (80 % power at alpha 0.05: 2.80 standard errors). The same
spread with more rows shrinks se as 1/√n, so separating an observed difference Δ needs
n · (MDE / |Δ|)² rows. Seeds: the variance of each point's metric over its seeds, σ_A² and σ_B², gives
k = (z_{1-alpha/2} + z_{1-beta})² (σ_A² + σ_B²) / Δ² seeds per point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class PowerSettings:
    alpha: float = 0.05
    power: float = 0.8

    @property
    def z(self) -> float:
        """z_{1-alpha/2} + z_{power}."""
        return NormalDist().inv_cdf(1 - self.alpha / 2) + NormalDist().inv_cdf(self.power)


def influence(stats: np.ndarray) -> np.ndarray:
    """Per-row contribution ψ_i of the ratio metric Σ s_i0 / Σ s_i1 over rows `stats` (n, 2)."""
    stats = np.asarray(stats, dtype=np.float64)
    den = stats[:, 1].sum()
    if den <= 0:
        return np.full(len(stats), math.nan)
    value = stats[:, 0].sum() / den
    return (stats[:, 0] - value * stats[:, 1]) / stats[:, 1].mean()


def standard_error(d: np.ndarray, groups: list | None = None) -> float:
    """Standard error of the mean of per-row values `d` (see the module docstring); `groups` (one label
    per row) gives the cluster-robust form."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n < 2:
        return math.nan
    dev = d - d.mean()
    if not groups:
        return float(math.sqrt((dev**2).sum() / (n * (n - 1))))
    codes: dict = {}
    index = np.array([codes.setdefault(g, len(codes)) for g in groups], dtype=np.int64)
    g = len(codes)
    if g < 2:
        return math.nan
    totals = np.bincount(index, weights=dev, minlength=g)
    return float(math.sqrt(g / (g - 1) * (totals**2).sum()) / n)


def mde(se: float, settings: PowerSettings = PowerSettings()) -> float:
    """Minimum detectable effect for a paired difference with standard error `se`."""
    return settings.z * se


def rows_needed(se: float, n: int, delta: float, settings: PowerSettings = PowerSettings()) -> int | None:
    """Test rows (like these) needed to detect a difference `delta` at the settings' power; None for delta 0."""
    if not delta or math.isnan(se) or math.isnan(delta):
        return None
    return int(math.ceil(n * (mde(se, settings) / abs(delta)) ** 2))


def seeds_needed(sd_a: float, sd_b: float, delta: float, settings: PowerSettings = PowerSettings()) -> int | None:
    """Seeds per point to detect `delta` between two points whose metric varies over seeds by sd_a, sd_b."""
    if not delta or any(math.isnan(x) for x in (sd_a, sd_b, delta)):
        return None
    return max(2, int(math.ceil(settings.z**2 * (sd_a**2 + sd_b**2) / delta**2)))
