"""The settings of a causal-LM train job, as types (the task's own, next to train.settings' shared ones).

Dataclasses only: the Snakefile imports this module when it parses (workflow/rules/tasks.smk derives
TRAIN_KEYS and the model card's keys from these fields).
"""

from __future__ import annotations

from dataclasses import dataclass

from loraflow.train.settings import LoopRuntime, TrainSettings


@dataclass(frozen=True)
class LMInputs:
    """What a causal-LM train job reads: the base model (and whether its own code may run), the token
    cache and, where it ran, the pre-flight report (its estimate lands next to the measurement)."""

    model_dir: str
    train_path: str
    val_path: str
    tokens_meta: str
    preflight: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class LMTrainSettings(TrainSettings):
    """train.* settings of the causal LM besides the shared loop's. max_eval_batches decides which
    validation loss picks the kept step; packing, tokens_per_forward, compile and attention keep the
    examples per step and the gradient sum, but sum in other orders, so the adapter differs in float rounding."""

    max_eval_batches: int = 0
    packing: bool = True
    tokens_per_forward: int = 0
    compile: bool | str = "auto"
    attention: str = "auto"


@dataclass(frozen=True)
class LearningRate:
    """The learning rates of config `train`; a train job is passed only the one its method uses (the
    run's own: the grid.learning_rate axis or train.learning_rate, train.learning_rate_full for `full`),
    so changing the other reruns nothing."""

    learning_rate: float = 1e-3
    learning_rate_full: float = 5e-5

    def of(self, method: str) -> float:
        return self.learning_rate_full if method == "full" else self.learning_rate


@dataclass(frozen=True)
class ReplaySettings:
    """train.replay: the share of each micro-batch taken by general rows (train/replay.py), and the replay
    data's token cache and its meta (data/replay.py)."""

    replay: float = 0.0
    replay_tokens: str | None = None
    replay_meta: str | None = None


@dataclass(frozen=True)
class LMRuntime(LoopRuntime):
    """Runtime settings of the causal LM: gradient checkpointing recomputes the same activations (the
    adapter is bit-identical), and max_memory_mb only switches it on."""

    gradient_checkpointing: bool = False
    max_memory_mb: int = 0
