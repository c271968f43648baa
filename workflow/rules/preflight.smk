# The grid's pre-flight: one job, one process, every point (train jobs wait for it).
POINT_KEYS = ["method", "r", "lora_alpha", "target_modules"]  # what a point's counts depend on (not its seed)


rule preflight:
    """Every grid point on the meta device, in one job: target modules exist, parameter counts, memory
    estimate, disk of a merged model; results/preflight.csv. A bad point fails the job, so no training
    starts. Adding a point reruns it (cheap); the train jobs of finished points stay done."""
    input:
        model_dir=rules.base_model.output.out_dir,
    output:
        out_jsons=expand(f"{R}/runs/{{run}}/preflight.json", run=RUNS),
        out_csv=f"{R}/preflight.csv",
    params:
        hp=settings(
            pick(config["train"], ["batch_size", "gradient_checkpointing"]),
            runs={name: pick(run, POINT_KEYS) for name, run in RUNS.items()},
            max_length=config["tokenize"]["max_length"],
            trust_remote_code=config["base_model"]["trust_remote_code"],
        ),
        runtime={"merge_runs": "merge.runs"},  # only the log's disk total depends on it
    priority: 100
    log:
        f"{R}/logs/preflight.log",
    benchmark:
        f"{R}/benchmarks/preflight.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/preflight.py"
