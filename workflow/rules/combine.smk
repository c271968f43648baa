rule combine:
    """Weighted combination of trained adapters (config `combine`): parts loaded on one base,
    switching verified, add_weighted_adapter, saved as runs/<name>/adapter like any run."""
    input:
        model_dir=rules.base_model.output.out_dir,
        adapter_dirs=lambda wc: [f"{R}/runs/{a}/adapter" for a in COMBOS[wc.run]["adapters"]],
        test_path=rules.split.output.out_test,
    output:
        out_adapter=directory(f"{R}/runs/{{run}}/adapter"),
        out_stats=f"{R}/runs/{{run}}/train_stats.json",
        out_check=f"{R}/runs/{{run}}/switch_check.json",
    log:
        f"{R}/logs/combine/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/combine/{{run}}.tsv"
    wildcard_constraints:
        run="|".join(re.escape(name) for name in sorted(COMBOS)) or "no-combination",
    conda:
        "../envs/train.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        hp=lambda wc: settings(
            pick(COMBOS[wc.run], ["weights", "combination_type", "density"]),
            adapter_names=COMBOS[wc.run]["adapters"],
            trust_remote_code=config["base_model"]["trust_remote_code"],
            precision=EVAL_PRECISION,
        ),
        runtime=RUNTIME,
    script:
        "../scripts/combine.py"
