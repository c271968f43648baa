rule reduce_intruders:
    """peft's reduce_intruder_dimension on a trained LoRA adapter (config `reduce_intruders`), saved as
    runs/<run>_ri/adapter like any run: evaluated and tabled next to its parent, so the table shows
    what the reduction costs the task and what it gives back in retention."""
    input:
        model_dir=rules.base_model.output.out_dir,
        adapter_dir=lambda wc: f"{R}/runs/{REDUCED[wc.run]['reduced_from']}/adapter",
        parent_stats=lambda wc: f"{R}/runs/{REDUCED[wc.run]['reduced_from']}/train_stats.json",
    output:
        out_adapter=directory(f"{R}/runs/{{run}}/adapter"),
        out_stats=f"{R}/runs/{{run}}/train_stats.json",
    log:
        f"{R}/logs/reduce_intruders/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/reduce_intruders/{{run}}.tsv"
    wildcard_constraints:
        run="|".join(re.escape(name) for name in sorted(REDUCED)) or "no-reduction",
    conda:
        "../envs/train.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        hp=settings(
            reduction={
                "top_k": config["rank_analysis"]["intruder_top_k"],
                "threshold": config["rank_analysis"]["intruder_threshold"],
                "mitigation_lambda": config["reduce_intruders"]["mitigation_lambda"],
            },
            trust_remote_code=config["base_model"]["trust_remote_code"],
        ),
        runtime=RUNTIME,
    script:
        "../scripts/reduce_intruders.py"
