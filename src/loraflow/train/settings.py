"""The settings of a train job, as types: what every task's train stage takes besides its files.

A rule passes these flat (params `hp` and `runtime`); runner.call_stage builds the dataclasses a stage
function names from them by field name (loraflow.binding). The workflow derives its key lists from the
same fields (workflow/rules/tasks.smk: GRID_KEYS, TRAIN_KEYS ...), so a setting is declared once, here.
Dataclasses only: the Snakefile imports this module when it parses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Field metadata of a train setting that says how a run was carried out rather than its recipe: a model
# card does not list it (card_fields).
NOT_ON_CARD = {"card": False}


@dataclass(frozen=True)
class GridPoint:
    """One point of the grid: what is trained (config `grid`, the seed). `full` has no r, alpha or targets."""

    r: int | None
    lora_alpha: float | None
    target_modules: Any  # a preset name, a regex string or a list of module names
    method: str = "lora"
    seed: int = 42


@dataclass(frozen=True)
class TrainSettings:
    """train.* settings of the shared loop that change what a run learns, for every task.

    eval_every and early_stopping_patience decide which validation picks the kept step; nproc_per_node:
    one optimizer step takes batch_size x grad_accum x nproc_per_node examples."""

    lora_dropout: float = 0.05
    weight_decay: float = 0.0
    precision: str = "fp32"
    epochs: float = 1
    max_steps: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 0
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    eval_every: int = field(default=20, metadata=NOT_ON_CARD)
    early_stopping_patience: int = 0
    nproc_per_node: int = field(default=1, metadata=NOT_ON_CARD)


@dataclass(frozen=True)
class LoopRuntime:
    """Settings that cannot change what a run learns (a resumed run ends bit-identical): read from the
    config when the job runs, so changing them reruns nothing."""

    threads: int | None = None
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None


@dataclass(frozen=True)
class RunOutputs:
    """What a train stage writes: the trained artefact (adapter directory), train_log.csv and train_stats.json."""

    out_adapter: str
    out_log: str
    out_stats: str


@dataclass(frozen=True)
class LoopSettings:
    """Everything `train.loop.fit` takes besides the task: the train settings, the runtime ones, the run's
    learning rate and seed."""

    train: TrainSettings = field(default_factory=TrainSettings)
    runtime: LoopRuntime = field(default_factory=LoopRuntime)
    learning_rate: float = 1e-3
    seed: int = 42


def card_fields(cls: type) -> list[str]:
    """The fields of a settings dataclass a model card lists (all but those marked NOT_ON_CARD)."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("card", True)]


def flat(*groups: Any, **values: Any) -> dict[str, Any]:
    """The flat setting names and values of settings dataclasses (nested ones spelled out), plus `values`:
    the pool a rule would pass (runner.stage_kwargs), e.g. to relaunch a stage or fingerprint a run."""
    out: dict[str, Any] = {}
    for group in groups:
        for f in dataclasses.fields(group):
            value = getattr(group, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                out.update(flat(value))
            else:
                out[f.name] = value
    out.update(values)
    return out


@dataclass(frozen=True)
class CombineSettings:
    """One weighted combination (config `combine.<name>`): its parts' run names, their weights and peft's
    combination type (a density for the pruning types); the prompts and tolerance of the switching and
    reload checks; the deploy precision the switching check runs in."""

    adapter_names: list[str]
    weights: list[float]
    combination_type: str = "cat"
    density: float | None = None
    n_prompts: int = 4
    tolerance: float = 1e-4
    precision: str | None = None
    threads: int | None = None
    trust_remote_code: bool = False
