BASE_MODEL = task_io("base_model")  # tasks.smk


rule base_model:
    """The base model once as a local safetensors directory with its tokenizer (causal_lm: the configured
    model, GGUF de-quantised; seq_cls: the encoder, builtin all-MiniLM-L6-v2)."""
    output:
        out_dir=directory(f"{R}/base_model"),
    params:
        task=TASK,
        **BASE_MODEL["params"],
    threads: BASE_MODEL["threads"]
    log:
        f"{R}/logs/base_model.log",
    benchmark:
        f"{R}/benchmarks/base_model.tsv"
    conda:
        BASE_MODEL["conda"]
    script:
        "../scripts/base_model.py"
