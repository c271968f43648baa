rule replay_data:
    """General conversations mixed into training (train.replay > 0): the base model's own greedy answers
    to the built-in general prompts, or the user's file (train.replay_source), with their token cache.
    Never part of the task's splits or metrics."""
    input:
        model_dir=rules.base_model.output.out_dir,
    output:
        out_rows=f"{R}/data/replay.jsonl",
        out_tokens=f"{R}/tokens/replay.npz",
        out_meta=f"{R}/tokens/replay_meta.json",
    log:
        f"{R}/logs/replay_data.log",
    benchmark:
        f"{R}/benchmarks/replay_data.tsv"
    conda:
        "../envs/train.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        hp=settings(
            max_length=config["tokenize"]["max_length"],
            source=config["train"]["replay_source"],
            generation=pick(config["train"], ["replay_prompts", "replay_max_new_tokens"]),
        ),
        runtime=RUNTIME,
    script:
        "../scripts/replay_data.py"
