"""The train stage's schedule: optimizer steps of a run and the micro-batches each step draws.

Every epoch sees every row exactly once and no step spans two epochs; epoch e's order depends only on
(seed, e), so a resumed run draws the same micro-batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from loraflow.model.batching import length_grouped_batches


def epoch_micro_batches(n_batches: int, epochs: float, epoch: int) -> int:
    """Micro-batches drawn in `epoch` (0-based) of a run of `epochs` epochs: all of them in every
    whole epoch, the first ceil(fraction x n) in a final partial one."""
    whole = math.floor(epochs)
    if epoch < whole:
        return n_batches
    return math.ceil((epochs - whole) * n_batches) if epoch == whole else 0


def plan_epoch_steps(n_batches: int, grad_accum: int, epochs: float, max_steps: int) -> int:
    """Optimizer steps of the train stage: `max_steps`, or exactly `epochs` epochs where no step spans two epochs (the
    last step of an epoch takes the micro-batches left, so every row is seen exactly once per epoch)."""
    if max_steps > 0:
        return max_steps
    steps, epoch = 0, 0
    while (n := epoch_micro_batches(n_batches, epochs, epoch)) > 0:
        steps += math.ceil(n / grad_accum)
        epoch += 1
    return max(1, steps)


def step_stream(
    lengths: list[int], batch_size: int, per_step: int, seed: int, epochs: float, max_steps: int, start: int = 0
) -> Iterator[tuple[int, list[list[int]]]]:
    """(epoch, micro-batches) per optimizer step, from step `start` on. Epoch e's order depends only on
    (seed, e), so the stream can be restarted at any step after a resume. A step takes `per_step`
    micro-batches (grad_accum x processes) except the last of an epoch, which takes what is left;
    with `max_steps` the stream runs on into further epochs."""
    step, epoch = 0, 0
    while True:
        batches = length_grouped_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))
        n = len(batches) if max_steps > 0 else epoch_micro_batches(len(batches), epochs, epoch)
        if n == 0:
            return
        for at in range(0, n, per_step):
            if step >= start:
                yield epoch, batches[at : min(at + per_step, n)]
            step += 1
        epoch += 1
