# The task (config `task`) and the settings its stage rules pass.
#
# Every shared stage rule (base_model, builtin_dataset, clean, split, train, evaluate_base, evaluate, table)
# passes `task` in its params; its script calls runner.call_task_stage, which calls the function
# loraflow.tasks.STAGES names for that task. What differs by task stands in the rule's own file, in a
# small table keyed by task just above the rule: `{"causal_lm": ..., "seq_cls": ...}[TASK]`. Where an entry
# names other rules' outputs or reads one task's settings, each entry is a `lambda:` and the table is called
# (`[TASK]()`): only the configured task's entry is built, the other task's rules are not defined. Adding a
# task: a STAGES entry in loraflow/tasks/__init__.py and an entry in each of those tables.
# Parsed on every invocation: no heavy imports here.

from loraflow.binding import field_names
from loraflow.data.settings import CleanSettings
from loraflow.evaluate.settings import EvalSettings
from loraflow.tasks.causal_lm.settings import LMTrainSettings
from loraflow.train.settings import GridPoint, TrainSettings

TASK = config["task"]
CAUSAL_LM = TASK == "causal_lm"
# train.replay > 0: general rows in every micro-batch, from the replay_data rule (replay.smk)
REPLAY = CAUSAL_LM and config["train"]["replay"] > 0
EVAL = config["evaluate"]
CLS = config["classify"]  # seq_cls: text classification, LoRA on an encoder plus a trained head (docs/seq_cls.md)
TRUST_REMOTE_CODE = config["base_model"]["trust_remote_code"]

# --------------------------------------------------------------------------------------------------
# causal_lm: instruction tuning of a decoder (the default)
# --------------------------------------------------------------------------------------------------

# clean.* settings: the fields of clean_dataset's CleanSettings (all of them can change which rows are kept
# or how); for the built-in data with data.builtin_clean's preset (loraflow.config.clean_settings).
CLEAN_KEYS = field_names(CleanSettings)

# train.* settings that change what a run learns: the fields of LMTrainSettings (loraflow/tasks/causal_lm/
# settings.py says why each can). Each reaches train_lora through params `hp`, so changing one reruns every
# train job (and what depends on it). A setting that cannot change the adapter is a field of LMRuntime
# instead, and goes to TRAIN_RUNTIME. learning_rate / learning_rate_full are added per run: only the one
# its method uses (see train_settings).
TRAIN_KEYS = field_names(LMTrainSettings)
# Settings that cannot change the adapter, read from the config when the job runs (changing them reruns
# nothing): a resumed run ends bit-identical (checkpoint_every); gradient checkpointing recomputes the
# same activations (bit-identical adapters, tests/test_workflow.py); threads, see JOB_THREADS.
TRAIN_RUNTIME = {
    **RUNTIME,
    "checkpoint_every": "train.checkpoint_every",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "max_memory_mb": "train.max_memory_mb",
}  # max_memory_mb only switches gradient checkpointing on
GRID_KEYS = field_names(GridPoint)  # what a run's grid point passes to its train job

# evaluate.* settings that change a row of the table (batch_size too: left padding in batched greedy
# decoding can change a generated token): the fields of EvalSettings, less the three evaluate.smk adds.
# samples_in_report only affects the report stage.
EVAL_KEYS = [k for k in field_names(EvalSettings) if k not in ("seed", "precision", "trust_remote_code")]

# --------------------------------------------------------------------------------------------------
# seq_cls
# --------------------------------------------------------------------------------------------------

# The `train` settings the classification task uses: the shared loop's TrainSettings (TRAIN_KEYS above, less
# the causal LM's own); changing another `train` key reruns nothing here. checkpoint_every cannot change a result.
CLS_TRAIN_KEYS = field_names(TrainSettings)
CLS_TRAIN_RUNTIME = {**RUNTIME, "checkpoint_every": "train.checkpoint_every"}


def table_settings(runs: dict, best_metric: str) -> dict:
    """params `hp` of the table: the runs, the metric that picks the best on validation, the bootstrap."""
    return settings(
        runs=runs,
        best_metric=best_metric,
        bootstrap_samples=config["table"]["bootstrap_samples"],
        confidence=config["table"]["confidence"],
        seed=config["seed"],
    )
