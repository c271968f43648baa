rule merge:
    """merge_and_unload, verified: merged logits must equal base + adapter logits within tolerance.
    Not for method full (no adapter to merge): see ADAPTER_RUNS."""
    input:
        model_dir=rules.base_model.output.out_dir,
        adapter_dir=rules.train.output.out_adapter,
        test_path=rules.split.output.out_test,
    output:
        out_dir=directory(f"{R}/runs/{{run}}/merged"),
        out_check=f"{R}/runs/{{run}}/merge_check.json",
    params:
        **config["merge"],
        method=lambda wc: ALL_RUNS[wc.run]["method"],
        threads=config["torch_threads"],
        trust_remote_code=config["base_model"]["trust_remote_code"],
        precision=EVAL_PRECISION,
    threads: max(1, config["torch_threads"])  # scheduling slots; torch_threads sets the compute threads
    resources:
        gpu=1,
    log:
        f"{R}/logs/merge/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/merge/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/merge.py"
