"""The settings of a seq_cls train job, as types (the task's own, next to train.settings' shared ones).

Dataclasses only: the Snakefile imports this module when it parses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassifierInputs:
    """What a seq_cls train job reads: the encoder (and whether its own code may run), the split rows and
    labels.json."""

    model_dir: str
    train_path: str
    val_path: str
    labels_path: str
    trust_remote_code: bool = False


@dataclass(frozen=True)
class ClassifySettings:
    """Texts are tokenised up to `max_length` (classify.max_length) tokens; validation runs in batches of
    `eval_batch_size` (evaluate.batch_size), as the evaluate stage does."""

    max_length: int = 256
    eval_batch_size: int = 32
