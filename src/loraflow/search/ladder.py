"""`grid.learning_rate: auto`: a short ladder of learning rates centred on a published rule for LoRA.

The rule: the best LoRA learning rate is about 10 times the best full fine-tuning rate of the same
model (Schulman et al., *LoRA Without Regret*, Thinking Machines, 2025: a ratio of about 10 held across
model sizes and data sets, with the 1/r-scaled parametrisation peft uses). The full fine-tuning rate is
the config's `train.learning_rate_full`, so the centre moves with the model when the user sets it.

The ladder holds `RUNGS` rates of the 1-3-10 series (1e-4, 3e-4, 1e-3, ...: neighbours a factor of
about 3 apart, and names that stay short and stable, `_lr0.0003`), the window of the series whose
geometric mean lies nearest the centre. A rule gives a centre, not an optimum: the ladder spans a
factor of about 30 around it so the best rate is usually inside, which the table then shows.
"""

from __future__ import annotations

import math

LORA_OVER_FULL = 10.0  # LoRA rate / full fine-tuning rate (LoRA Without Regret)
RUNGS = 4
_MANTISSAS = (1, 3)  # the 1-3-10 series


def series_value(k: int) -> float:
    """The k-th rate of the 1-3-10 series (k = 0: 1, k = 1: 3, k = 2: 10, k = -1: 0.3 ...), exact as written."""
    exponent, idx = divmod(k, len(_MANTISSAS))
    return float(f"{_MANTISSAS[idx]}e{exponent}")


def ladder(centre: float, rungs: int = RUNGS) -> list[float]:
    """`rungs` consecutive rates of the 1-3-10 series whose geometric mean is nearest `centre`, ascending."""
    if centre <= 0 or rungs < 1:
        raise ValueError(f"need a positive centre and at least one rung, got centre={centre}, rungs={rungs}")
    target = math.log10(centre)
    # index of the series value nearest the centre (about two per decade)
    k0 = round(target * len(_MANTISSAS))
    best: list[float] | None = None
    best_gap = math.inf
    for start in range(k0 - rungs - 1, k0 + 2):
        window = [series_value(k) for k in range(start, start + rungs)]
        gap = abs(sum(math.log10(v) for v in window) / rungs - target)
        if gap < best_gap - 1e-12:
            best, best_gap = window, gap
    assert best is not None  # the first window always beats an infinite gap
    return best


def auto_rates(learning_rate_full: float, rungs: int = RUNGS) -> list[float]:
    """The `auto` ladder: centred on LORA_OVER_FULL x the full fine-tuning rate."""
    return ladder(LORA_OVER_FULL * learning_rate_full, rungs)
