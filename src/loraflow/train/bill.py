"""What a sweep will cost before it runs: each point's training time and peak memory on this machine, and
the whole sweep's time under its search (grid: every point to the end; halving: the rung plan).

Time is a short measured calibration (model/calibration.py: seconds per trained and per validated token
of the real model in the job's settings) times the token counts of the token cache: the steps a run
plans (train.max_steps, or train.epochs over the train rows), the tokens a step trains and the
validations it runs. Memory is the pre-flight's estimate corrected by the step over the longest rows
the calibration measured. Rows mixed in by train.replay count in every step's tokens.

A calibration costs a few real steps; where the sweep itself trains barely more (a smoke run), the
bill is not worth them and is left out under search.calibrate auto (calibration_skipped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loraflow.model.calibration import Calibration


@dataclass(frozen=True)
class SweepSettings:
    """What decides a sweep's bill besides its points: search.method (`search_method`), search.eta and
    search.min_steps; train.epochs, train.max_steps, train.grad_accum, train.eval_every and
    train.max_eval_batches; merge.runs; search.calibrate (auto | always | never). `calibration_steps`:
    timed optimizer steps of the calibration (0: no calibration, so no time and no calibrated memory)."""

    search_method: str = "grid"
    eta: int = 3
    min_steps: int = 20
    epochs: float = 1
    max_steps: int = 0
    grad_accum: int = 1
    eval_every: int = 20
    max_eval_batches: int = 0
    merge_runs: str = "best"
    calibrate: str = "auto"
    calibration_steps: int = 2


@dataclass(frozen=True)
class PointCost:
    """One point's train job on this machine: seconds to start (load the model), per optimizer step, per
    validation; training tokens per optimizer step."""

    load_s: float
    step_s: float
    eval_s: float
    tokens_per_step: float


def planned_steps(sweep: SweepSettings, train_rows: int, batch_size: int) -> int:
    """Optimizer steps of a straight run, as the train stage plans them (train.schedule.plan_epoch_steps)."""
    from loraflow.train.schedule import plan_epoch_steps

    return plan_epoch_steps(math.ceil(max(train_rows, 1) / batch_size), sweep.grad_accum, sweep.epochs, sweep.max_steps)


def validations(start: int, stop: int, eval_every: int) -> int:
    """Validations of a job that trains steps start+1 .. stop: every eval_every-th step, and the last step
    (the end of a run, or the budget of a rung) where it is not one of those."""
    every = stop // eval_every - start // eval_every if eval_every else 0
    return every + (0 if eval_every and stop % eval_every == 0 else 1)


def job_time(cost: PointCost, start: int, stop: int, eval_every: int) -> float:
    """Seconds of one train job from step `start` to `stop`: start-up, the steps, their validations."""
    return cost.load_s + (stop - start) * cost.step_s + validations(start, stop, eval_every) * cost.eval_s


def sweep_jobs(n_points: int, total_steps: int, sweep: SweepSettings) -> list[tuple[int, int, int]]:
    """The sweep's train jobs as (points, from step, to step). Grid: every point from 0 to the end. Halving
    (search/halving.py): rung k trains its live points from the previous budget to its own (capped at the
    run's steps), the best ceil(live / eta) go on, and the last cut's survivors train on to the end."""
    if sweep.search_method != "halving":
        return [(n_points, 0, total_steps)]
    from loraflow.search.halving import keep_count, rung_budgets

    jobs, live, done = [], n_points, 0
    for budget in rung_budgets(n_points, sweep.eta, sweep.min_steps, sweep.max_steps):
        stop = min(budget, total_steps)
        if stop > done:
            jobs.append((live, done, stop))
            done = stop
        live = keep_count(live, sweep.eta)
    if done < total_steps:
        jobs.append((live, done, total_steps))
    return jobs


# search.calibrate auto: a calibration that would train more than this share of the sweep's own steps
# is not worth its time.
CALIBRATION_SHARE = 0.05


def calibration_skipped(groups: int, n_points: int, total_steps: int, sweep: SweepSettings) -> str | None:
    """Why the pre-flight leaves the bill out, or None to calibrate: `groups` (method, targets) pairs to
    calibrate, each one step over the longest rows plus `calibration_steps` timed ones, against the steps
    the sweep trains under its search."""
    if sweep.calibrate == "never" or sweep.calibration_steps <= 0:
        return "search.calibrate: never"
    cost = groups * (1 + sweep.calibration_steps)
    steps = sum(k * (b - a) for k, a, b in sweep_jobs(n_points, total_steps, sweep))
    if sweep.calibrate == "auto" and cost > CALIBRATION_SHARE * steps:
        return (
            f"search.calibrate auto: calibrating would train {cost} steps, more than "
            f"{100 * CALIBRATION_SHARE:.0f} % of the sweep's {steps}; search.calibrate: always prices it anyway"
        )
    return None


def sweep_bill(costs: list[PointCost], total_steps: int, sweep: SweepSettings) -> dict:
    """The sweep's time and training tokens under its search, and the full grid's for comparison. Which
    points a cut keeps is not known before training: every job is costed at the points' mean."""
    n = len(costs)
    mean = PointCost(
        *(sum(getattr(c, f) for c in costs) / n for f in ("load_s", "step_s", "eval_s", "tokens_per_step"))
    )
    jobs = sweep_jobs(n, total_steps, sweep)
    return {
        "search": sweep.search_method,
        "points": n,
        "jobs": [list(j) for j in jobs],
        "time_s": sum(k * job_time(mean, a, b, sweep.eval_every) for k, a, b in jobs),
        "train_tokens": sum(k * (b - a) * mean.tokens_per_step for k, a, b in jobs),
        "grid_time_s": sum(job_time(c, 0, total_steps, sweep.eval_every) for c in costs),
        "grid_train_tokens": sum(total_steps * c.tokens_per_step for c in costs),
    }


def point_cost(
    cal: Calibration,
    sweep: SweepSettings,
    tokens: dict,
    batch_size: int,
    total_steps: int,
    rows_per_batch: int | None = None,
) -> PointCost:
    """A point's cost from its calibration and the token cache's meta (`tokens`: its splits). A micro-batch
    of `batch_size` task rows trains `rows_per_batch` rows (replay rows on top; counted at the task rows'
    mean length)."""
    train, val = tokens["train"], tokens.get("val", {})
    if sweep.max_steps > 0:  # steps of grad_accum micro-batches of mean rows
        per_step = sweep.grad_accum * batch_size * train["tokens"] / max(train["examples"], 1)
    else:  # exactly `epochs` passes over the train rows
        per_step = sweep.epochs * train["tokens"] / total_steps
    per_step *= (rows_per_batch or batch_size) / batch_size
    val_rows = val.get("examples", 0)
    if sweep.max_eval_batches:
        val_rows = min(
            val_rows, sweep.max_eval_batches * 2 * batch_size
        )  # validation batches are twice the train batch
    val_tokens = val_rows * val.get("tokens", 0) / max(val.get("examples", 0), 1)
    return PointCost(cal.load_s, per_step * cal.train_s_per_token, val_tokens * cal.eval_s_per_token, per_step)


def calibrated_memory_mb(terms: dict, cal: Calibration) -> float:
    """The estimate's training peak (its TRAIN_TERMS, in `terms`) raised by what the calibration's step
    really took beyond its own estimate; the load peak where that is the larger. Only raised: one step is a
    lower bound of a run's peak (a run also validates, and its allocator's heap grows over many steps, which
    the estimate's fitted coefficients include), so a step that took less than its estimate says nothing
    about the run's peak, while one that took more shows the estimate short."""
    from loraflow.model.memory import TRAIN_TERMS

    train = sum(terms[k] for k in TRAIN_TERMS) + max(0.0, cal.peak_mb - cal.estimate_mb)
    return max(train, terms.get("load_peak", 0.0))


def describe(bill: dict, sweep: SweepSettings, device: str) -> str:
    """One line for the log: the sweep's time under its search, next to the full grid's."""

    def minutes(s: float) -> str:
        return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"

    how = f"halving (eta {sweep.eta}, min_steps {sweep.min_steps})" if bill["search"] == "halving" else "grid"
    line = (
        f"the sweep of {bill['points']} point(s) under {how}: about {minutes(bill['time_s'])} of training on this "
        f"machine ({device}), {bill['train_tokens']:,.0f} training tokens"
    )
    if bill["search"] == "halving":
        line += (
            f"; the full grid: {minutes(bill['grid_time_s'])}, {bill['grid_train_tokens']:,.0f} tokens "
            f"({100 * bill['train_tokens'] / max(bill['grid_train_tokens'], 1):.0f} % of its tokens)"
        )
    return line
