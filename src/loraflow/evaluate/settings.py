"""Settings and paths of the evaluate and lm-eval stages as frozen dataclasses.

A rule passes them flat; runner.call_stage groups them into these types by field name (binding.bind),
so each group is named once, here. Imports nothing heavy: the workflow reads these fields when it
parses (tasks.smk derives its evaluate.* key list from EvalSettings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EvalSettings:
    """evaluate.* settings that change a row of the table, then the three the rule adds (seed, precision,
    trust_remote_code). batch_size counts too: left padding in batched greedy decoding can change a
    generated token.

    max_samples / val_samples: how many test / validation rows are generated (0 = all; the loss covers
    every row); task: generation | classification (accuracy and macro-F1 too) | auto (classification when
    the references form a small label set); answer_check and answer_pattern: the per-row answer check
    (evaluate/answer_check.py); retention_items: how many built-in retention questions the base model is
    asked (0 = none), retention_max_new_tokens their answer cap; consistency_questions x consistency_samples
    sampled answers at `temperature` give the consistency score; cpu_kernels: auto | plain
    (generation.cpu_decoding)."""

    batch_size: int = 16
    max_new_tokens: int = 64
    max_samples: int = 0
    val_samples: int = 0
    task: str = "auto"
    answer_check: str = "none"
    answer_pattern: str | None = None
    retention_items: int = 0
    retention_max_new_tokens: int = 32
    consistency_questions: int = 8
    consistency_samples: int = 4
    temperature: float = 0.7
    cpu_kernels: str = "auto"
    seed: int = 42
    precision: str | None = None  # the deploy precision (auto | fp32 | bf16; None: model.device.pick_dtype's default)
    trust_remote_code: bool = False


@dataclass(frozen=True)
class EvalPaths:
    """The files one evaluate job reads and writes. `val_path`/`val_tokens`: the validation split (for
    choosing a run); `out_scores`: one line per scored row, joined by row id in the table stage;
    `base_scores`: the base model's scores.jsonl (a run is asked only the retention items the base answered
    correctly)."""

    model_dir: str
    test_path: str
    test_tokens: str
    tokens_meta: str
    out_metrics: str
    out_generations: str
    val_path: str | None = None
    val_tokens: str | None = None
    out_scores: str | None = None
    base_scores: str | None = None


@dataclass(frozen=True)
class LmEvalSettings:
    """evaluate.lm_eval_*: the lm-eval-harness tasks (names, or the user's own task YAML files under
    `include_path`), a cap per task (`limit`: a count, or a share below 1) and the few-shot count; then
    the evaluate settings it shares."""

    tasks: Sequence[str] = ()
    include_path: str | None = None
    limit: float | None = None
    num_fewshot: int | None = None
    batch_size: int = 8
    seed: int = 42
    precision: str | None = None
    trust_remote_code: bool = False
