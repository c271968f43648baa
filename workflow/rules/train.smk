rule train:
    """One LoRA adapter per grid point (results/runs/<run>/adapter)."""
    wildcard_constraints:
        run=TRAINED_RUN,
    input:
        model_dir=rules.base_model.output.out_dir,
        train_path=rules.tokenize.output.out_train,
        val_path=rules.tokenize.output.out_val,
        tokens_meta=rules.tokenize.output.meta_path,
        preflight=rules.preflight.output.out_json,
    output:
        out_adapter=directory(f"{R}/runs/{{run}}/adapter"),
        out_log=f"{R}/runs/{{run}}/train_log.csv",
        out_stats=f"{R}/runs/{{run}}/train_stats.json",
    params:
        r=lambda wc: RUNS[wc.run]["r"],
        lora_alpha=lambda wc: RUNS[wc.run]["lora_alpha"],
        target_modules=lambda wc: RUNS[wc.run]["target_modules"],
        method=lambda wc: RUNS[wc.run]["method"],
        **{k: v for k, v in config["train"].items() if k != "learning_rate"},
        learning_rate=lambda wc: RUNS[wc.run]["learning_rate"],  # the grid.learning_rate axis
        checkpoint_dir=lambda wc: f"{R}/checkpoints/{wc.run}",
        seed=lambda wc: RUNS[wc.run]["seed"],
        threads=config["torch_threads"],
        trust_remote_code=config["base_model"]["trust_remote_code"],
    threads: max(1, config["torch_threads"])  # scheduling slots; torch_threads sets the compute threads
    resources:
        gpu=1,
    log:
        f"{R}/logs/train/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train.py"
