# train.* settings that change what a run learns. Each reaches train_lora by name through params `hp`,
# so changing one reruns every train job (and what depends on it). Add a new result-affecting train key
# here; one that cannot change the adapter goes to TRAIN_RUNTIME instead.
#   eval_every, max_eval_batches, early_stopping_patience: decide which validation loss picks the kept step;
#   nproc_per_node: one optimizer step takes batch_size x grad_accum x nproc_per_node examples.
# learning_rate / learning_rate_full are added per run: only the one its method uses (see train_settings).
TRAIN_KEYS = ["lora_dropout", "weight_decay", "precision", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_steps",
              "lr_scheduler", "max_grad_norm", "eval_every", "early_stopping_patience", "max_eval_batches", "nproc_per_node"]
# Settings that cannot change the adapter, read from the config when the job runs (changing them reruns
# nothing): a resumed run ends bit-identical (checkpoint_every); gradient checkpointing recomputes the
# same activations (bit-identical adapters, tests/test_workflow.py); threads, see JOB_THREADS.
TRAIN_RUNTIME = {**RUNTIME, "checkpoint_every": "train.checkpoint_every", "gradient_checkpointing": "train.gradient_checkpointing"}
GRID_KEYS = ["method", "r", "lora_alpha", "target_modules", "seed"]


# torch_threads in each of the train.nproc_per_node processes, or every CPU of the machine (split among them).
TRAIN_THREADS = config["torch_threads"] * config["train"]["nproc_per_node"] or JOB_THREADS


rule train:
    """One LoRA adapter per grid point (results/runs/<run>/adapter). Takes train.nproc_per_node GPU
    slots (resources gpu=N): the job's N devices go one to each torchrun rank."""
    wildcard_constraints:
        run=TRAINED_RUN,
    input:
        model_dir=rules.base_model.output.out_dir,
        train_path=rules.tokenize.output.out_train,
        val_path=rules.tokenize.output.out_val,
        tokens_meta=rules.tokenize.output.meta_path,
        # training waits for its point's pre-flight check (preflight.smk: only unchecked points are checked)
        preflight=f"{R}/runs/{{run}}/preflight.json",
    output:
        out_adapter=directory(f"{R}/runs/{{run}}/adapter"),
        out_log=f"{R}/runs/{{run}}/train_log.csv",
        out_stats=f"{R}/runs/{{run}}/train_stats.json",
    params:
        hp=train_settings,
        runtime=TRAIN_RUNTIME,
        checkpoint_dir=lambda wc: f"{R}/checkpoints/{wc.run}",
    threads: TRAIN_THREADS
    resources:
        gpu=config["train"]["nproc_per_node"],
    log:
        f"{R}/logs/train/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train.py"
