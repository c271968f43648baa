TRAIN = task_io("train")  # tasks.smk; its settings: TRAIN_KEYS (causal_lm), CLS_TRAIN_KEYS (seq_cls)


rule train:
    """One adapter per grid point (results/runs/<run>/adapter; seq_cls: LoRA plus the trained head), by the
    shared loop (precision, checkpoints and resume, early stopping). Takes train.nproc_per_node GPU
    slots (resources gpu=N): the job's N devices go one to each torchrun rank."""
    wildcard_constraints:
        run=TRAINED_RUN,
    input:
        model_dir=rules.base_model.output.out_dir,
        **TRAIN["input"],
    output:
        out_adapter=directory(f"{R}/runs/{{run}}/adapter"),
        out_log=f"{R}/runs/{{run}}/train_log.csv",
        out_stats=f"{R}/runs/{{run}}/train_stats.json",
    params:
        task=TASK,
        **TRAIN["params"],
        checkpoint_dir=lambda wc: f"{R}/checkpoints/{wc.run}",
    threads: TRAIN_THREADS
    resources:
        gpu=config["train"]["nproc_per_node"],
    log:
        f"{R}/logs/train/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{run}}.tsv"
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/train.py"
