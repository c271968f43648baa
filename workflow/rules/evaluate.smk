EVALUATE_BASE = task_io("evaluate_base")  # tasks.smk (EVAL_SETTINGS: causal_lm)


rule evaluate_base:
    """The baseline row, evaluated exactly like every run (causal_lm: the untouched base model, asked
    every retention item, the runs only those it answers correctly; seq_cls: the base encoder with a
    seeded, untrained head)."""
    input:
        model_dir=rules.base_model.output.out_dir,
        **EVALUATE_BASE["input"],
    output:
        **EVALUATE_BASE["output"],
    params:
        task=TASK,
        **EVALUATE_BASE["params"],
    threads: JOB_THREADS
    resources:
        gpu=1,
    log:
        f"{R}/logs/evaluate/{EVALUATE_BASE['baseline']}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{EVALUATE_BASE['baseline']}.tsv"
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/evaluate_base.py"


EVALUATE = task_io("evaluate")


rule evaluate:
    """Base + adapter on val (for choosing) and test (held out). causal_lm: loss, BLEU, ROUGE, exact
    match, fact accuracy, per-row scores for the bootstrap, retention, before/after samples; seq_cls:
    accuracy, macro-F1, per-class F1 and predictions, the head checked against the adapter."""
    input:
        model_dir=rules.base_model.output.out_dir,
        adapter_dir=rules.train.output.out_adapter,
        **EVALUATE["input"],
    output:
        **EVALUATE["output"],
    params:
        task=TASK,
        **EVALUATE["params"],
    threads: JOB_THREADS
    resources:
        gpu=1,
    log:
        f"{R}/logs/evaluate/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{run}}.tsv"
    conda:
        "../envs/train.yaml"
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
        params:
            hp=LM_EVAL,
            runtime=RUNTIME,
        threads: JOB_THREADS
        resources:
            gpu=1,
        log:
            f"{R}/logs/lm_eval/base.log",
        benchmark:
            f"{R}/benchmarks/lm_eval/base.tsv"
        conda:
            "../envs/train.yaml"
        script:
            "../scripts/lm_eval_base.py"


    rule lm_eval:
        """lm-eval-harness tasks on base + adapter, loaded as the evaluate stage loads it."""
        input:
            model_dir=rules.base_model.output.out_dir,
            adapter_dir=rules.train.output.out_adapter,
        output:
            out_json=f"{R}/runs/{{run}}/lm_eval.json",
        params:
            hp=lambda wc: settings(LM_EVAL, method=ALL_RUNS[wc.run]["method"]),
            runtime=RUNTIME,
        threads: JOB_THREADS
        resources:
            gpu=1,
        log:
            f"{R}/logs/lm_eval/{{run}}.log",
        benchmark:
            f"{R}/benchmarks/lm_eval/{{run}}.tsv"
        conda:
            "../envs/train.yaml"
        script:
            "../scripts/lm_eval.py"
