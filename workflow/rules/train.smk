# The task's part of train (config `task`): the data it trains on, its settings (tasks.smk: TRAIN_KEYS for
# causal_lm, CLS_TRAIN_KEYS for seq_cls) and those that cannot change a result.
TRAIN = {
    "causal_lm": lambda: {
        "input": {
            "train_path": rules.tokenize.output.out_train,
            "val_path": rules.tokenize.output.out_val,
            "tokens_meta": rules.tokenize.output.meta_path,
            # training waits for its point's pre-flight check (preflight.smk: only unchecked points are checked)
            "preflight": f"{R}/runs/{{run}}/preflight.json",
            **(
                {"replay_tokens": f"{R}/tokens/replay.npz", "replay_meta": f"{R}/tokens/replay_meta.json"}
                if REPLAY
                else {}
            ),
            # search_common.smk: the last rung's checkpoint
            **({"resume_from": lambda wc: halving_start(wc)} if HALVING else {}),
        },
        "hp": train_settings,  # common.smk
        "runtime": TRAIN_RUNTIME,
    },
    "seq_cls": lambda: {  # LoRA matrices plus the trained head
        "input": {
            "train_path": rules.split.output.out_train,
            "val_path": rules.split.output.out_val,
            "labels_path": rules.split.output.out_labels,
        },
        "hp": lambda wc: settings(
            pick(RUNS[wc.run], [*GRID_KEYS, "learning_rate"]),
            pick(config["train"], CLS_TRAIN_KEYS),
            max_length=CLS["max_length"],
            eval_batch_size=EVAL["batch_size"],
            trust_remote_code=TRUST_REMOTE_CODE,
        ),
        "runtime": CLS_TRAIN_RUNTIME,
    },
}[TASK]()


rule train:
    """One adapter per grid point (results/runs/<run>/adapter; seq_cls: LoRA plus the trained head), by the
    shared loop (precision, checkpoints and resume, early stopping). Takes train.nproc_per_node GPU
    slots (resources gpu=N): the job's N devices go one to each torchrun rank."""
    input:
        **TRAIN["input"],
        model_dir=rules.base_model.output.out_dir,
    output:
        out_adapter=directory(f"{R}/runs/{{run}}/adapter"),
        out_log=f"{R}/runs/{{run}}/train_log.csv",
        out_stats=f"{R}/runs/{{run}}/train_stats.json",
    log:
        f"{R}/logs/train/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{run}}.tsv"
    wildcard_constraints:
        run=TRAINED_RUN,
    conda:
        "../envs/train.yaml"
    threads: TRAIN_THREADS
    resources:
        gpu=config["train"]["nproc_per_node"],
    params:
        task=TASK,
        hp=TRAIN["hp"],
        runtime=TRAIN["runtime"],
        checkpoint_dir=lambda wc: f"{R}/checkpoints/{wc.run}",
    script:
        "../scripts/train.py"
