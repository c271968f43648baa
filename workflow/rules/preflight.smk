rule preflight:
    """Per grid point, on the meta device: target modules exist, parameter counts, memory estimate.
    High priority: every point is checked before any training starts."""
    wildcard_constraints:
        run=TRAINED_RUN,
    input:
        model_dir=rules.base_model.output.out_dir,
    output:
        out_json=f"{R}/runs/{{run}}/preflight.json",
    params:
        run=lambda wc: wc.run,
        r=lambda wc: RUNS[wc.run]["r"],
        lora_alpha=lambda wc: RUNS[wc.run]["lora_alpha"],
        target_modules=lambda wc: RUNS[wc.run]["target_modules"],
        method=lambda wc: RUNS[wc.run]["method"],
        batch_size=config["train"]["batch_size"],
        max_length=config["tokenize"]["max_length"],
        gradient_checkpointing=config["train"]["gradient_checkpointing"],
        trust_remote_code=config["base_model"]["trust_remote_code"],
    priority: 100
    log:
        f"{R}/logs/preflight/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/preflight/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/preflight.py"


rule preflight_table:
    """results/preflight.csv: the cost of every grid point, known before training."""
    input:
        runs=expand(rules.preflight.output.out_json, run=RUNS),
    output:
        out_csv=f"{R}/preflight.csv",
    log:
        f"{R}/logs/preflight_table.log",
    benchmark:
        f"{R}/benchmarks/preflight_table.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/preflight_table.py"
