"""Greedy answers compared token for token, with the near-tie rule of the export checks: answers that
part where the model's own logit margin between the two tokens is below `tie_margin` count as agreeing,
since there greedy decoding is decided by rounding, not by the model."""

from __future__ import annotations


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def agreement_outside_ties(n: int, agreeing: int, parted: list[dict], tie_margin: float) -> float:
    """Share of prompts whose answers agree, counting those that part at a near tie (margin < tie_margin)."""
    ties = sum(1 for d in parted if d["margin"] is not None and d["margin"] < tie_margin)
    return (agreeing + ties) / max(n, 1)
