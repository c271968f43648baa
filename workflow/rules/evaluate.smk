EVAL = config["evaluate"]
# evaluate.* settings that change a row of the table (batch_size too: left padding in batched greedy
# decoding can change a generated token). samples_in_report only affects the report stage.
EVAL_KEYS = ["batch_size", "max_new_tokens", "max_samples", "val_samples", "task", "answer_check", "answer_pattern",
             "retention_items", "retention_max_new_tokens", "consistency_questions", "consistency_samples", "temperature"]
EVAL_SETTINGS = settings(pick(EVAL, EVAL_KEYS), seed=config["seed"], precision=EVAL_PRECISION,
                         trust_remote_code=config["base_model"]["trust_remote_code"])


rule evaluate_base:
    """The untouched base model, evaluated exactly like every run: the baseline row. It is asked every
    retention item; the runs only those it answers correctly."""
    input:
        model_dir=rules.base_model.output.out_dir,
        test_path=rules.split.output.out_test,
        test_tokens=rules.tokenize.output.out_test,
        val_path=rules.split.output.out_val,
        val_tokens=rules.tokenize.output.out_val,
        tokens_meta=rules.tokenize.output.meta_path,
    output:
        out_metrics=f"{R}/base/eval.json",
        out_generations=f"{R}/base/generations.jsonl",
        out_scores=f"{R}/base/scores.jsonl",
    params:
        hp=EVAL_SETTINGS,
        runtime=RUNTIME,
    threads: JOB_THREADS
    resources:
        gpu=1,
    log:
        f"{R}/logs/evaluate/base.log",
    benchmark:
        f"{R}/benchmarks/evaluate/base.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/evaluate_base.py"


rule evaluate:
    """Base + adapter: loss, BLEU, ROUGE, exact match, fact accuracy on test (held out) and val (for
    choosing), per-row scores for the bootstrap, retention; before/after samples."""
    input:
        model_dir=rules.base_model.output.out_dir,
        adapter_dir=rules.train.output.out_adapter,
        test_path=rules.split.output.out_test,
        test_tokens=rules.tokenize.output.out_test,
        val_path=rules.split.output.out_val,
        val_tokens=rules.tokenize.output.out_val,
        tokens_meta=rules.tokenize.output.meta_path,
        base_generations=rules.evaluate_base.output.out_generations,
        base_scores=rules.evaluate_base.output.out_scores,
    output:
        out_metrics=f"{R}/runs/{{run}}/eval.json",
        out_generations=f"{R}/runs/{{run}}/generations.jsonl",
        out_samples=f"{R}/runs/{{run}}/samples.jsonl",
        out_scores=f"{R}/runs/{{run}}/scores.jsonl",
    params:
        hp=lambda wc: settings(EVAL_SETTINGS, method=ALL_RUNS[wc.run]["method"]),
        runtime=RUNTIME,
    threads: JOB_THREADS
    resources:
        gpu=1,
    log:
        f"{R}/logs/evaluate/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/evaluate.py"


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
        "../../envs/train.yaml"
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
        "../../envs/train.yaml"
    script:
        "../scripts/lm_eval.py"
