"""Train stage: one training loop for every task (loraflow.tasks.base.Task), one adapter (or, for method
`full`, one fine-tuned model) per grid point.

The loop is plain PyTorch. A task turns a micro-batch of examples into forward passes and summed
losses; the loop divides by the step's target count, so every step's gradient is the same sum over
the same targets however the micro-batch is split into forward passes, accumulated or spread over
processes. `epochs: N` sees every row exactly N times (no step spans two epochs); `train_time_s` is the
training loop alone, validation passes are timed apart. Precision (`train.precision`: bf16 autocast),
checkpoints every `checkpoint_every` steps outside Snakemake's outputs (a killed job resumes from there
and ends with the same weights as an uninterrupted run), early stopping on validation and several
processes (`nproc_per_node`, torchrun; see distributed.py) serve every task alike.

Task causal_lm (train_lora, tasks/causal_lm/train.py): a micro-batch of conversations is packed into rows of
up to `tokenize.max_length` tokens and run as forward passes of at most `train.tokens_per_forward`
tokens; the loss applies the LM head only at assistant positions. Task seq_cls: tasks/seq_cls/train.py.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loraflow.io import atomic_dir, atomic_path, read_json, write_json
from loraflow.model.counts import parameter_counts
from loraflow.model.device import autocast, peak_memory_mb, pick_device, set_seed, set_threads, training_precision
from loraflow.model.methods import make_optimizer
from loraflow.tasks.base import Task
from loraflow.train import distributed
from loraflow.train.checkpoint import Checkpointer
from loraflow.train.progress import Progress
from loraflow.train.schedule import plan_epoch_steps, step_stream
from loraflow.train.settings import LoopRuntime, LoopSettings, RunOutputs, flat

log = logging.getLogger(__name__)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                p.copy_(state[name])


def write_log(path: str, rows: list[dict], fields: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def log_fields(task: Task) -> list[str]:
    """train_log.csv's columns: a row per optimizer step, the task's validation columns filled where it validated."""
    return ["step", "epoch", "train_loss", *task.eval_fields, "lr", "tokens_seen", "elapsed_s"]


@dataclass
class Fitted:
    """A trained model in memory (the kept step's weights loaded) and what the loop recorded."""

    model: object
    state: dict  # step, rows (train_log.csv), best validation metrics and step, counters, timings
    total_steps: int
    n_batches: int  # micro-batches of one epoch
    trainable: int
    total: int
    device: torch.device
    precision: str
    world: int
    rank: int
    optimizer: str
    loop: LoopSettings
    checkpoint: Checkpointer | None
    stopped: dict | None = None  # stop_at: the step it stopped at and its validation figures


def fit(
    task: Task,
    loop: LoopSettings,
    *,
    hparams: dict | None = None,
    progress_path: str | None = None,
    resume_from: str | None = None,
    stop_at: int = 0,
    stop_dir: str | None = None,
) -> Fitted:
    """Train `task`'s model: `max_steps` optimizer steps, or exactly `epochs` epochs (step_stream); a step
    sums the gradients of grad_accum x processes micro-batches of `batch_size` examples, the loss divided
    by the step's target count; validation every `eval_every` steps and at the end, the best-ranked step
    kept (early stopping after `early_stopping_patience` evaluations without improvement); a checkpoint
    every `checkpoint_every` steps in `checkpoint_dir`, resumed when its fingerprint (`hparams` and the
    task's data files) matches. Under torchrun each rank takes its share of every step's micro-batches.
    A progress line (and `progress_path`, for `loraflow status`) at a fixed interval: train/progress.py.

    Successive halving (search/halving.py) trains a run in pieces of the same schedule: `stop_at` ends
    the loop after that step (validated there, its checkpoint written to `stop_dir`, the weights of that
    step kept), and `resume_from` starts from such a checkpoint, which must carry this run's fingerprint.
    The piece's own validation is not logged and chooses nothing, so the pieces end as a straight run."""
    from transformers import get_scheduler

    s, rt = loop.train, loop.runtime
    rank, world = distributed.world()
    set_threads(rt.threads or (max(1, len(os.sched_getaffinity(0)) // world) if world > 1 else None))
    set_seed(loop.seed)
    device = pick_device()
    amp = training_precision(s.precision, device)
    train_set = task.examples("train")
    model = task.build(device, amp)
    trainable, total = parameter_counts(model)

    lengths = [task.length(ex) for ex in train_set]
    n_batches = math.ceil(len(train_set) / s.batch_size)
    per_step = s.grad_accum * world
    total_steps = plan_epoch_steps(n_batches, per_step, s.epochs, s.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(task.method, params, loop.learning_rate, s.weight_decay, device)
    scheduler = get_scheduler(
        s.lr_scheduler, optimizer, num_warmup_steps=s.warmup_steps, num_training_steps=total_steps
    )
    state: dict[str, Any] = {  # the loop's record, JSON in a checkpoint
        "step": 0,
        "micro_batches": 0,
        "rows": [],
        "best": None,
        "best_step": 0,
        "bad_evals": 0,
        "tokens_seen": 0,
        "supervised_seen": 0,
        "elapsed_s": 0.0,
        "eval_s": 0.0,
        "replay_rows_seen": 0,
        "replay_tokens_seen": 0,
    }
    replay = getattr(task, "replay", None)  # train.replay: general rows mixed into every micro-batch (train/replay.py)
    best_state = None
    ckpt = checkpointer(rt.checkpoint_dir, hparams, task) if rt.checkpoint_every and rt.checkpoint_dir else None
    if ckpt and (resumed := ckpt.load(model, optimizer, scheduler)):
        state, best_state = {**state, **resumed[0]}, resumed[1]
        log.info("resumed from checkpoint at step %d of %d", state["step"], total_steps)
    elif resume_from and (resumed := start_from(resume_from, hparams, task, model, optimizer, scheduler)):
        state, best_state = {**state, **resumed[0]}, resumed[1]
        log.info("resumed from %s at step %d of %d", resume_from, state["step"], total_steps)

    progress = Progress(progress_path if rank == 0 else None, total_steps)
    stream = step_stream(lengths, s.batch_size, per_step, loop.seed, s.epochs, s.max_steps, start=state["step"])
    model.train()
    last = min(total_steps, stop_at) if stop_at > 0 else total_steps
    # an earlier piece may have stopped early already
    patience_out = bool(s.early_stopping_patience and state["bad_evals"] >= s.early_stopping_patience)
    while state["step"] < last and not patience_out:
        tick = time.perf_counter()
        step = state["step"] + 1
        epoch, drawn = next(stream)
        parts = [[train_set[i] for i in batch] for batch in drawn]
        if replay is not None:
            extra = [replay.draw(loop.seed, step, j, len(ex)) for j, ex in enumerate(parts)]
            state["replay_rows_seen"] += sum(map(len, extra))
            state["replay_tokens_seen"] += sum(task.length(x) for ex in extra for x in ex)
            parts = [ex + more for ex, more in zip(parts, extra)]
        n_target = sum(task.targets(ex) for ex in parts)  # over all ranks' micro-batches
        step_loss = 0.0
        for ex in parts[rank::world]:
            for batch in task.forwards(ex):
                with autocast(amp, device):
                    loss_sum = task.loss_sum(model, batch)
                (loss_sum / max(n_target, 1)).backward()
                step_loss += loss_sum.item() / max(n_target, 1)
                del batch, loss_sum
        if world > 1:
            for p in params:  # a rank without a micro-batch in a short last step still joins the sum
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            distributed.sum_gradients(params)
            step_loss = distributed.sum_value(step_loss, device)
        state["tokens_seen"] += sum(task.length(x) for ex in parts for x in ex)
        if s.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["supervised_seen"] += n_target
        state["micro_batches"] += len(drawn)
        state["step"] = step
        state["elapsed_s"] += time.perf_counter() - tick  # training only: evaluations are timed apart
        row = {
            "step": step,
            "epoch": epoch + 1,
            "train_loss": round(step_loss, 5),
            **dict.fromkeys(task.eval_fields, ""),
            "lr": scheduler.get_last_lr()[0],
            "tokens_seen": state["tokens_seen"],
            "elapsed_s": round(state["elapsed_s"], 2),
        }
        if (s.eval_every and step % s.eval_every == 0) or step == total_steps:
            tick = time.perf_counter()
            metrics = task.validate(model)
            state["eval_s"] += time.perf_counter() - tick
            row.update(metrics)
            if state["best"] is None or task.rank(metrics) > task.rank(state["best"]):
                state.update(best=metrics, best_step=step, bad_evals=0)
                best_state = trainable_state(model)
            else:
                state["bad_evals"] += 1
        state["rows"].append(row)
        log.info(
            "step %d/%d train_loss %.4f%s lr %.2e %.0f tok/s",
            step,
            total_steps,
            step_loss,
            "".join(f" {k} {row[k]:.4f}" for k in task.eval_fields if row[k] != ""),
            row["lr"],
            state["tokens_seen"] / max(state["elapsed_s"], 1e-9),
        )
        if rank == 0 and (line := progress.update(step, state["tokens_seen"], state["elapsed_s"], state["eval_s"])):
            log.info("%s", line)
        if s.early_stopping_patience and state["bad_evals"] >= s.early_stopping_patience:
            log.info("early stopping at step %d: no validation improvement in %d evaluations", step, state["bad_evals"])
            break
        if ckpt and rank == 0 and step % rt.checkpoint_every == 0 and step < total_steps:
            ckpt.save(model, optimizer, scheduler, state, best_state)
    stopped = None
    if stop_at > 0:
        pieces = (optimizer, scheduler, best_state)
        stopped = stop_piece(task, model, state, checkpointer(stop_dir, hparams, task), pieces)
    else:
        if best_state is not None and state["best_step"] != state["step"]:
            log.info("restoring the weights of step %d (validation %s)", state["best_step"], state["best"])
            load_trainable_state(model, best_state)
        model.eval()
    return Fitted(
        model=model,
        state=state,
        total_steps=total_steps,
        n_batches=n_batches,
        trainable=trainable,
        total=total,
        device=device,
        precision=amp,
        world=world,
        rank=rank,
        optimizer=type(optimizer).__name__,
        loop=loop,
        checkpoint=ckpt,
        stopped=stopped,
    )


def checkpointer(directory: str | None, hparams: dict | None, task: Task) -> Checkpointer:
    """The checkpoint of this run in `directory`, fingerprinted by `hparams` and the task's data files."""
    if directory is None or hparams is None:
        raise ValueError("a checkpoint needs its directory and the run's hparams (its fingerprint)")
    return Checkpointer(directory, hparams, *task.fingerprint_files)


def start_from(
    path: str, hparams: dict | None, task: Task, model, optimizer, scheduler
) -> tuple[dict, dict | None] | None:
    """Load the checkpoint in `path` (another job's output, so never discarded here): one of other settings or
    data is an error, as resuming it would end as a run nobody asked for."""
    source = checkpointer(path, hparams, task)
    saved = read_json(Path(path) / "state.json").get("fingerprint")
    if saved != source.fingerprint:
        raise ValueError(
            f"{path}: this checkpoint was written with other settings or data than this run's; "
            "remove it so that the run is trained from its first step"
        )
    return source.load(model, optimizer, scheduler)


def stop_piece(task: Task, model, state: dict, out: Checkpointer, rest: tuple) -> dict:
    """End of a piece (fit's stop_at): the validation figures of the step reached (the log's, where that step
    was validated anyway) and its checkpoint in `out`, so the next piece resumes exactly there."""
    optimizer, scheduler, best_state = rest
    row = state["rows"][-1] if state["rows"] else {}
    metrics = {k: row[k] for k in task.eval_fields if row.get(k, "") != ""} or task.validate(model)
    out.save(model, optimizer, scheduler, state, best_state)
    return {"step": state["step"], **metrics}


def train(
    task: Task, out: RunOutputs, loop: LoopSettings, *, hparams: dict | None = None, resume_from: str | None = None
) -> dict:
    """The train stage of any task: `fit` (progress.json beside train_stats.json), then `save_run`."""
    progress = str(Path(out.out_stats).with_name("progress.json"))
    return save_run(task, fit(task, loop, hparams=hparams, progress_path=progress, resume_from=resume_from), out)


def save_run(task: Task, run: Fitted, out: RunOutputs) -> dict:
    """On rank 0: the trained artefact (task.save, atomically), train_log.csv and train_stats.json; the
    checkpoint is cleared once they are written."""
    if run.rank != 0:
        distributed.finish()
        return {}
    with atomic_dir(out.out_adapter) as tmp:
        saved = task.save(run.model, str(tmp))
    state, wall = run.state, run.state["elapsed_s"]
    write_log(out.out_log, state["rows"], log_fields(task))
    last = [r["train_loss"] for r in state["rows"][-5:]]
    stats = {
        **task.stats(state),
        "learning_rate": run.loop.learning_rate,
        "trainable_params": run.trainable,
        "total_params": run.total,
        "trainable_pct": 100 * run.trainable / run.total,
        "adapter_mb": sum(f.stat().st_size for f in Path(out.out_adapter).glob("*.safetensors")) / 2**20,
        "steps": state["step"],
        "planned_steps": run.total_steps,
        "best_step": state["best_step"],
        "epochs_seen": state["micro_batches"] / run.n_batches,
        "final_train_loss": sum(last) / len(last),
        "train_time_s": wall,
        "eval_time_s": state["eval_s"],
        "tokens_seen": state["tokens_seen"],
        "replay_rows_seen": state["replay_rows_seen"],
        "replay_tokens_seen": state["replay_tokens_seen"],
        "tokens_per_s": state["tokens_seen"] / max(wall, 1e-9),
        "peak_memory_mb": peak_memory_mb(run.device),
        "device": str(run.device),
        "precision": run.precision,
        "processes": run.world,
        "seed": run.loop.seed,
        "optimizer": run.optimizer,
        **saved,
    }
    write_json(out.out_stats, stats)
    if run.checkpoint:
        run.checkpoint.clear()
    distributed.finish()
    log.info(
        "trained %d steps in %.1fs (%.0f tokens/s; validation %.1fs), best validation %s at step %d",
        stats["steps"],
        wall,
        stats["tokens_per_s"],
        state["eval_s"],
        state["best"],
        state["best_step"],
    )
    return stats


def relaunch(entry, nproc: int, settings: dict, out_stats: str) -> dict | None:
    """With `nproc` (train.nproc_per_node) > 1 outside torchrun: run the stage `entry` again as that many
    processes (distributed.launch), each binding the flat `settings` (train.settings.flat) to its signature,
    and return the stats rank 0 wrote; None when this process is to train itself."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        distributed.launch(nproc, entry, settings)
        return read_json(out_stats)
    return None


def run_hparams(*groups, **values) -> dict:
    """A run's result-affecting settings, flat (what a checkpoint must match): its settings groups less the
    LoopRuntime's, which cannot change the result."""
    neutral = {f.name for f in dataclasses.fields(LoopRuntime)}
    return {k: v for k, v in flat(*groups, **values).items() if k not in neutral}


# one rank of a torchrun launch: python -m loraflow.train.loop spec.json (see distributed.launch)
if __name__ == "__main__":
    from loraflow.binding import bind

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s rank" + os.environ.get("RANK", "0") + " %(name)s: %(message)s"
    )
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    module, name = spec["entry"].split(":")
    entry = getattr(importlib.import_module(module), name)
    entry(**bind(entry, spec["kwargs"]))
