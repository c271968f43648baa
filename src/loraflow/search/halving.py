"""Successive halving on validation (`search.method: halving`).

Every grid point trains to a first budget of optimizer steps (`search.min_steps`) of its own full
schedule (the learning-rate schedule is planned over the run's total steps T, so a piece of it is exactly
the first steps of a straight run) and is scored on validation at that step. The best 1/eta of the points
(`search.eta`) go on from their checkpoint to the next budget, min_steps x eta^k, the rest stop there; the
survivors of the last cut train on to T with the train stage, from their last checkpoint, and end with
the adapter a straight run of T steps ends with (train.loop.fit: stop_at / resume_from).

The cut depends only on the scores and the run names (ties go to the name that sorts first), never on
which job finished first, so any number of cores or a cluster keeps the same points. Points are scored
by their validation loss at the budget's step: it costs no generation, and it is what the training loop
validates. The table still chooses among the finished points by `table.best_metric` on validation.

Forgetting-aware cuts: with `table.retention_floor`, each rung also asks the point the validation part of
the retention set (the items the base model answers correctly there; the test part is never asked), and
the cut ranks the points that hold the floor first, by validation loss, then the others by how much they
kept. That is the table's own rule, so the budget is not spent on points the table would refuse.

Imported by the Snakefile at parse time: no torch here (the rung stage imports the loop when it runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from loraflow.io import read_json, write_json


def cuts(n_points: int, eta: int) -> int:
    """Cuts that take `n_points` down to one point when each keeps ceil(live / eta)."""
    live, k = n_points, 0
    while live > 1:
        live, k = math.ceil(live / eta), k + 1
    return k


def rung_budgets(n_points: int, eta: int, min_steps: int, max_steps: int = 0) -> list[int]:
    """The step budgets of the rungs (one per cut): min_steps x eta^k for as many cuts as take the points down
    to one. With `max_steps` (T known before training) a rung whose budget reaches T is no rung: it would
    train the whole run, which the final training does. With epochs T is known only at run time; there a
    rung whose budget reaches T trains to T, and the final training then has no step left to do."""
    budgets = [min_steps * eta**k for k in range(cuts(n_points, eta))]
    return [b for b in budgets if b < max_steps] if max_steps > 0 else budgets


def keep_count(n_live: int, eta: int) -> int:
    """Points that go on from a rung of `n_live`: the best ceil(n_live / eta)."""
    return math.ceil(n_live / eta)


def _rank_key(name: str, loss: float) -> tuple:
    finite = loss is not None and math.isfinite(loss)  # a diverged point (nan, inf) ranks last
    return (0 if finite else 1, loss if finite else 0.0, name)


def survivors(
    losses: dict[str, float], eta: int, retention: dict[str, float | None] | None = None, floor: float | None = None
) -> list[str]:
    """The best ceil(n / eta) points by validation loss (lower is better; ties: the name that sorts first),
    in that order. With a retention `floor` (percent) and the points' validation `retention`, the points
    that hold the floor come first (by loss), then the others by retention, most kept first; where no point
    has a measured retention (the base answered no validation item) the floor does not apply. Depends on
    nothing but its arguments, so every order of finishing keeps the same points."""
    measured = {n: v for n, v in (retention or {}).items() if v is not None and math.isfinite(v)}

    def key(name: str) -> tuple:
        by_loss = _rank_key(name, losses[name])
        if floor is None or not measured:
            return by_loss
        kept = measured.get(name, -math.inf)
        return (0, *by_loss) if kept >= floor else (1, -kept, *by_loss)

    ranked = sorted(losses, key=key)
    return ranked[: keep_count(len(ranked), eta)]


def select(
    rung: int,
    budget: int,
    results: list[str],
    previous: str | None,
    out_select: str,
    eta: int = 3,
    floor: float | None = None,
) -> dict:
    """Stage `halving_select`: read every live point's rung result (search/rung<k>/<run>.json), keep the best
    1/eta (within the retention `floor` where the rungs measured retention, see `survivors`), and write
    `out_select` with the whole history so far (the previous cut's file, `previous`, plus this rung): the
    last cut's file alone tells the table who stopped where."""
    scored = {}
    for path in results:
        result = read_json(path)
        scored[Path(path).stem] = result
    retention = {name: r.get("val_retention") for name, r in scored.items()}
    kept = survivors({name: r["eval_loss"] for name, r in scored.items()}, eta, retention, floor or None)
    history = read_json(previous)["rungs"] if previous else []
    history.append(
        {
            "rung": rung,
            "budget": budget,
            "eta": eta,
            **({"floor": floor} if floor else {}),
            "kept": kept,
            "points": {name: scored[name] for name in sorted(scored)},
        }
    )
    info = {"survivors": kept, "rungs": history}
    write_json(out_select, info)
    return info


def pruned_points(history: dict) -> dict[str, dict]:
    """{point: its last rung result (step, eval_loss, tokens_seen)} for every point a cut stopped."""
    out = {}
    for rung in history["rungs"]:
        for name, result in rung["points"].items():
            if name not in rung["kept"]:
                out[name] = result
    return out


@dataclass(frozen=True)
class RungRetention:
    """The retention check at a cut (evaluate.* settings; retention_items 0 = none): how many built-in items
    the base model was asked, the answers' token cap, the generation batch and the deploy precision."""

    retention_items: int = 0
    retention_max_new_tokens: int = 32
    retention_batch_size: int = 16
    retention_precision: str | None = None


def train_rung(
    stop_at: int,
    out_checkpoint: str,
    out_result: str,
    resume_from: str | None = None,
    base_scores: str | None = None,
    check: RungRetention = RungRetention(),
    **train_args,
) -> dict:
    """Stage `halving_rung`: train one point (train_lora's settings, `train_args`) from `resume_from` (the
    previous rung's checkpoint; none at the first rung) up to step `stop_at` of its schedule; write its
    checkpoint to `out_checkpoint` and {step, eval_loss, tokens_seen, planned_steps} to `out_result`. With
    `check.retention_items` and the base model's scores (`base_scores`), also its validation retention there
    (val_retention, val_retention_items: see `rung_retention`)."""
    from loraflow.binding import bind
    from loraflow.tasks.causal_lm.train import lora_run
    from loraflow.train.loop import fit

    task, loop, hparams = lora_run(
        **bind(lora_run, train_args)
    )  # the same run, and fingerprint, as the final train job's
    run = fit(task, loop, hparams=hparams, resume_from=resume_from, stop_at=stop_at, stop_dir=out_checkpoint)
    if run.checkpoint:
        run.checkpoint.clear()  # the piece's own checkpoints (train.checkpoint_every); out_checkpoint is the result
    result = {
        **(run.stopped or {}),
        "tokens_seen": run.state["tokens_seen"],
        "planned_steps": run.total_steps,
        "train_time_s": run.state["elapsed_s"],
    }
    if check.retention_items and base_scores:
        result.update(rung_retention(task, run, check, base_scores))
    write_json(out_result, result)
    return result


def rung_retention(task, run, check: RungRetention, base_scores: str) -> dict:
    """The point's validation retention at this step, measured as the evaluate stage measures it: its
    adapter saved, then loaded on the base model in the deploy precision (the training model is let go
    first, so a GPU never holds both)."""
    import gc
    import tempfile

    import torch

    from loraflow.evaluate.loading import load_for_eval
    from loraflow.evaluate.run import val_retention

    with tempfile.TemporaryDirectory() as adapter:
        task.save(run.model, adapter)
        run.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        files = task.inputs
        model = load_for_eval(files.model_dir, adapter, files.trust_remote_code, task.method, check.retention_precision)
        return val_retention(
            model,
            task.tokenizer,
            base_scores,
            check.retention_items,
            check.retention_batch_size,
            check.retention_max_new_tokens,
        )
