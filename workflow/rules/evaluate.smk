EVAL = config["evaluate"]


rule evaluate_base:
    """The untouched base model, evaluated exactly like every run: the baseline row."""
    input:
        model_dir=rules.base_model.output.out_dir,
        test_path=rules.split.output.out_test,
        test_tokens=rules.tokenize.output.out_test,
        tokens_meta=rules.tokenize.output.meta_path,
    output:
        out_metrics=f"{R}/base/eval.json",
        out_generations=f"{R}/base/generations.jsonl",
    params:
        batch_size=EVAL["batch_size"],
        max_new_tokens=EVAL["max_new_tokens"],
        max_samples=EVAL["max_samples"],
        task=EVAL["task"],
        consistency_questions=EVAL["consistency_questions"],
        consistency_samples=EVAL["consistency_samples"],
        temperature=EVAL["temperature"],
        seed=config["seed"],
        threads=config["torch_threads"],
        trust_remote_code=config["base_model"]["trust_remote_code"],
        precision=EVAL_PRECISION,
    threads: max(1, config["torch_threads"])  # scheduling slots; torch_threads sets the compute threads
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
    """Test loss, perplexity, BLEU, ROUGE, exact match of base + adapter; before/after samples."""
    input:
        model_dir=rules.base_model.output.out_dir,
        adapter_dir=rules.train.output.out_adapter,
        test_path=rules.split.output.out_test,
        test_tokens=rules.tokenize.output.out_test,
        tokens_meta=rules.tokenize.output.meta_path,
        base_generations=rules.evaluate_base.output.out_generations,
    output:
        out_metrics=f"{R}/runs/{{run}}/eval.json",
        out_generations=f"{R}/runs/{{run}}/generations.jsonl",
        out_samples=f"{R}/runs/{{run}}/samples.jsonl",
    params:
        batch_size=EVAL["batch_size"],
        max_new_tokens=EVAL["max_new_tokens"],
        max_samples=EVAL["max_samples"],
        task=EVAL["task"],
        consistency_questions=EVAL["consistency_questions"],
        consistency_samples=EVAL["consistency_samples"],
        temperature=EVAL["temperature"],
        seed=config["seed"],
        threads=config["torch_threads"],
        trust_remote_code=config["base_model"]["trust_remote_code"],
        precision=EVAL_PRECISION,
        method=lambda wc: ALL_RUNS[wc.run]["method"],
    threads: max(1, config["torch_threads"])  # scheduling slots; torch_threads sets the compute threads
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
