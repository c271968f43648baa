"""Tasks: what differs between causal-LM tuning and classification, behind one interface (tasks.base.Task):
how rows become examples, how a batch becomes a loss, how a model is validated and saved. A new task
is one module implementing it; the training loop (train.loop) serves them all.

STAGES maps each task to the function behind each shared stage rule (base_model, builtin_dataset, clean,
split, train, evaluate_base, evaluate, table): a rule passes `task` in its params and its script calls
runner.call_task_stage, which looks the function up here. Entries are "module:function" strings, so this
module imports nothing (the Snakefile imports loraflow.tasks.seq_cls.data at parse time).
"""

from __future__ import annotations

STAGES: dict[str, dict[str, str]] = {
    "causal_lm": {
        "base_model": "loraflow.model.base_model:prepare_base_model",
        "builtin_dataset": "loraflow.data.builtin.support_qa:generate_dataset",
        "clean": "loraflow.data.clean:clean_dataset",
        "split": "loraflow.data.split:split_dataset",
        "train": "loraflow.tasks.causal_lm.train:train_lora",
        "evaluate_base": "loraflow.evaluate.run:evaluate_model",  # the untouched base model
        "evaluate": "loraflow.evaluate.run:evaluate_run",
        "table": "loraflow.report.table:write_comparison",
    },
    "seq_cls": {
        "base_model": "loraflow.tasks.seq_cls.model:export_base_model",
        "builtin_dataset": "loraflow.data.builtin.reviews:generate_reviews",
        "clean": "loraflow.tasks.seq_cls.data:clean_classification_data",
        "split": "loraflow.tasks.seq_cls.data:split_classification_data",
        "train": "loraflow.tasks.seq_cls.train:train_classifier",
        # the base encoder with a seeded, untrained head
        "evaluate_base": "loraflow.tasks.seq_cls.evaluate:evaluate_untrained_head",
        "evaluate": "loraflow.tasks.seq_cls.evaluate:evaluate_adapter",
        "table": "loraflow.tasks.seq_cls.table:write_comparison",
    },
}


def stage_function(task: str, stage: str) -> tuple[str, str]:
    """(module, function) of `stage` for `task`; a KeyError names what is missing."""
    if task not in STAGES:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(STAGES)}")
    if stage not in STAGES[task]:
        raise KeyError(f"task {task!r} has no stage {stage!r}; its stages: {', '.join(STAGES[task])}")
    module, function = STAGES[task][stage].split(":")
    return module, function
