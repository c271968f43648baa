"""What a task is to the training loop (loraflow.train.loop): the one interface every task implements.

A task turns a split into examples, builds the trainable model (the base loaded, wrapped with the one
LoraConfig builder, model.methods.lora_config), turns a micro-batch of examples into the inputs of one
or more forward passes and each of those into a summed loss, scores the model on validation, and saves
the trained artefact. Everything else (the seeded, length-grouped step stream with exact epochs, the
optimizer and schedule, precision, gradient accumulation, multi-process gradient sums, checkpoints and
resume, early stopping on validation, train_log.csv and train_stats.json) is the loop's, shared by
every task. A new task (token classification, preference pairs, ...) is one module implementing this.

Implemented by loraflow.tasks.causal_lm.train.CausalLM and loraflow.tasks.seq_cls.train.SequenceClassification.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import torch


class Task(Protocol):
    @property
    def method(self) -> str:
        """grid.method: decides the optimizer (model.methods.make_optimizer)."""

    @property
    def eval_fields(self) -> list[str]:
        """The validation columns of train_log.csv, in order (`validate`'s keys)."""

    @property
    def fingerprint_files(self) -> list[str]:
        """Data files a checkpoint must match to be resumed (with the hyperparameters)."""

    def examples(self, split: str) -> list:
        """The examples of a split ("train"); the task keeps what it needs for `validate` itself."""

    def length(self, example) -> int:
        """Tokens of one example (length-grouped batches, tokens_seen)."""

    def build(self, device: torch.device, precision: str):
        """The trainable model on `device` for the resolved `precision` (fp32 | bf16); the torch RNG
        is seeded just before, so adapter and head initialisation follow the run's seed."""

    def targets(self, examples: list) -> int:
        """How many loss targets `examples` hold: a step's loss is the sum over its targets divided by
        the step's total (over every micro-batch and process), so every target weighs the same."""

    def forwards(self, examples: list) -> Iterable[Any]:
        """One micro-batch as the inputs of one or more forward passes (on the device)."""

    def loss_sum(self, model, batch) -> torch.Tensor:
        """The loss of one forward pass, summed over its targets (a scalar; the loop runs it under the
        precision's autocast and calls backward)."""

    def validate(self, model) -> dict[str, float]:
        """The validation metrics, keyed by `eval_fields` (rounded as logged)."""

    def rank(self, metrics: dict[str, float]) -> tuple:
        """Orders validation results: the step whose metrics rank highest is the one kept."""

    def save(self, model, out_dir: str) -> dict:
        """Write the trained artefact (adapter, ...) into `out_dir`; returns extra train_stats keys."""

    def stats(self, state: dict) -> dict:
        """The task's own train_stats.json keys: its settings and what it reads of the loop's final `state`
        (`state["best"]`: the kept step's validation metrics, None without validation; counters such as
        `supervised_seen` and `elapsed_s`)."""
