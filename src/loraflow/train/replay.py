"""Replay in the training loop: general examples mixed into every micro-batch (train.replay).

`share` is the share of each micro-batch's rows that are replay rows: a micro-batch of n task rows gets
round(n · share / (1 - share)) replay rows on top, so the task's own schedule (steps, epochs, which task
rows each step sees) is the same with replay as without. The replay rows of a micro-batch are drawn
from a generator seeded by (seed, step, micro-batch), so a run resumed from a checkpoint draws exactly
what the uninterrupted run drew.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def replay_rows(task_rows: int, share: float) -> int:
    """How many replay rows a micro-batch of `task_rows` task rows gets at replay share `share`."""
    if share <= 0 or task_rows <= 0:
        return 0
    return max(1, round(task_rows * share / (1 - share)))


@dataclass(frozen=True)
class ReplayMix:
    """The replay examples (the task's own example type) and the share of each micro-batch they take."""

    examples: list
    share: float

    def __post_init__(self):
        if not 0 <= self.share < 1:
            raise ValueError(f"train.replay must be in [0, 1): a share of each batch, got {self.share}")
        if self.share > 0 and not self.examples:
            raise ValueError("train.replay > 0 but the replay data holds no example")

    def rows_for(self, task_rows: int) -> int:
        """How many replay rows a micro-batch of `task_rows` task rows gets."""
        return replay_rows(task_rows, self.share)

    def draw(self, seed: int, step: int, micro_batch: int, task_rows: int) -> list:
        """The replay rows of one micro-batch (without repeats within it while the set is large enough)."""
        k = self.rows_for(task_rows)
        if not k:
            return []
        rng = np.random.default_rng([seed, step, micro_batch])
        picks = rng.choice(len(self.examples), size=k, replace=k > len(self.examples))
        return [self.examples[i] for i in picks]
