rule base_model:
    """Convert the configured base model once to a safetensors directory (GGUF is de-quantised)."""
    output:
        out_dir=directory(f"{R}/base_model"),
    params:
        hp=settings(pick(config["base_model"], ["source", "path", "gguf_file", "revision", "trust_remote_code"])),
        runtime=RUNTIME,
    threads: JOB_THREADS
    log:
        f"{R}/logs/base_model.log",
    benchmark:
        f"{R}/benchmarks/base_model.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/base_model.py"
