# The settings of evaluate_base and evaluate, by task (config `task`; causal_lm: EVAL_KEYS, tasks.smk).
EVAL_SETTINGS = {
    "causal_lm": lambda: settings(
        pick(EVAL, EVAL_KEYS), seed=config["seed"], precision=EVAL_PRECISION, trust_remote_code=TRUST_REMOTE_CODE
    ),
    "seq_cls": lambda: settings(
        batch_size=EVAL["batch_size"],
        max_length=CLS["max_length"],
        seed=config["seed"],
        trust_remote_code=TRUST_REMOTE_CODE,
    ),
}[TASK]()
# What both read besides the model (config `task`).
TEST_SET = {
    "causal_lm": lambda: {  # rows and their tokens
        "test_path": rules.split.output.out_test,
        "test_tokens": rules.tokenize.output.out_test,
        "val_path": rules.split.output.out_val,
        "val_tokens": rules.tokenize.output.out_val,
        "tokens_meta": rules.tokenize.output.meta_path,
    },
    "seq_cls": lambda: {
        "val_path": rules.split.output.out_val,
        "test_path": rules.split.output.out_test,
        "labels_path": rules.split.output.out_labels,
    },
}[TASK]()
# The baseline row (config `task`): its name and what it writes.
EVALUATE_BASE = {
    "causal_lm": {  # the untouched base model
        "baseline": "base",
        "output": {
            "out_metrics": f"{R}/base/eval.json",
            "out_generations": f"{R}/base/generations.jsonl",
            "out_scores": f"{R}/base/scores.jsonl",
        },
    },
    "seq_cls": {  # the base encoder with a seeded, untrained head
        "baseline": "untrained_head",
        "output": {
            "out_metrics": f"{R}/baselines/untrained_head/eval.json",
            "out_predictions": f"{R}/baselines/untrained_head/predictions.jsonl",
        },
    },
}[TASK]


rule evaluate_base:
    """The baseline row, evaluated exactly like every run (causal_lm: the untouched base model, asked
    every retention item, the runs only those it answers correctly; seq_cls: the base encoder with a
    seeded, untrained head)."""
    input:
        **TEST_SET,
        model_dir=rules.base_model.output.out_dir,
    output:
        **EVALUATE_BASE["output"],
    log:
        f"{R}/logs/evaluate/{EVALUATE_BASE['baseline']}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{EVALUATE_BASE['baseline']}.tsv"
    conda:
        "../envs/train.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        task=TASK,
        hp=EVAL_SETTINGS,
        runtime=RUNTIME,
    script:
        "../scripts/evaluate_base.py"


# The task's part of evaluate (config `task`): the base row's files it compares with, what it writes, its settings.
EVALUATE = {
    "causal_lm": lambda: {
        "input": {
            "base_generations": rules.evaluate_base.output.out_generations,
            "base_scores": rules.evaluate_base.output.out_scores,
        },
        "output": {
            "out_generations": f"{R}/runs/{{run}}/generations.jsonl",
            "out_samples": f"{R}/runs/{{run}}/samples.jsonl",
            "out_scores": f"{R}/runs/{{run}}/scores.jsonl",
        },
        "hp": lambda wc: settings(EVAL_SETTINGS, method=ALL_RUNS[wc.run]["method"]),
    },
    "seq_cls": lambda: {  # base + adapter via PeftModel.from_pretrained (head checked against the adapter)
        "input": {},
        "output": {"out_predictions": f"{R}/runs/{{run}}/predictions.jsonl"},
        "hp": EVAL_SETTINGS,
    },
}[TASK]()


rule evaluate:
    """Base + adapter on val (for choosing) and test (held out). causal_lm: loss, BLEU, ROUGE, exact
    match, fact accuracy, per-row scores for the bootstrap, retention, before/after samples; seq_cls:
    accuracy, macro-F1, per-class F1 and predictions, the head checked against the adapter."""
    input:
        **TEST_SET,
        **EVALUATE["input"],
        model_dir=rules.base_model.output.out_dir,
        adapter_dir=rules.train.output.out_adapter,
    output:
        **EVALUATE["output"],
        out_metrics=f"{R}/runs/{{run}}/eval.json",
    log:
        f"{R}/logs/evaluate/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{run}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        task=TASK,
        hp=EVALUATE["hp"],
        runtime=RUNTIME,
    script:
        "../scripts/evaluate.py"


if not CAUSAL_LM:

    rule majority:
        """seq_cls baseline: always the most frequent training label."""
        input:
            train_path=rules.split.output.out_train,
            val_path=rules.split.output.out_val,
            test_path=rules.split.output.out_test,
            labels_path=rules.split.output.out_labels,
        output:
            out_metrics=f"{R}/baselines/majority/eval.json",
            out_predictions=f"{R}/baselines/majority/predictions.jsonl",
        log:
            f"{R}/logs/evaluate/majority.log",
        benchmark:
            f"{R}/benchmarks/evaluate/majority.tsv"
        localrule: True
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/majority.py"


if CAUSAL_LM:

    # Optional lm-eval-harness benchmarks (evaluate.lm_eval_tasks; extra `lm-eval`), base and every run.
    LM_EVAL = settings(
        tasks=EVAL["lm_eval_tasks"],
        include_path=EVAL["lm_eval_include_path"],
        limit=EVAL["lm_eval_limit"],
        num_fewshot=EVAL["lm_eval_num_fewshot"],
        batch_size=EVAL["batch_size"],
        seed=config["seed"],
        precision=EVAL_PRECISION,
        trust_remote_code=config["base_model"]["trust_remote_code"],
    )

    rule lm_eval_base:
        """lm-eval-harness tasks on the untouched base model (only when evaluate.lm_eval_tasks is set)."""
        input:
            model_dir=rules.base_model.output.out_dir,
        output:
            out_json=f"{R}/base/lm_eval.json",
        log:
            f"{R}/logs/lm_eval/base.log",
        benchmark:
            f"{R}/benchmarks/lm_eval/base.tsv"
        conda:
            "../envs/train.yaml"
        threads: JOB_THREADS
        resources:
            gpu=1,
        params:
            hp=LM_EVAL,
            runtime=RUNTIME,
        script:
            "../scripts/lm_eval_base.py"

    rule lm_eval:
        """lm-eval-harness tasks on base + adapter, loaded as the evaluate stage loads it."""
        input:
            model_dir=rules.base_model.output.out_dir,
            adapter_dir=rules.train.output.out_adapter,
        output:
            out_json=f"{R}/runs/{{run}}/lm_eval.json",
        log:
            f"{R}/logs/lm_eval/{{run}}.log",
        benchmark:
            f"{R}/benchmarks/lm_eval/{{run}}.tsv"
        conda:
            "../envs/train.yaml"
        threads: JOB_THREADS
        resources:
            gpu=1,
        params:
            hp=lambda wc: settings(LM_EVAL, method=ALL_RUNS[wc.run]["method"]),
            runtime=RUNTIME,
        script:
            "../scripts/lm_eval.py"
