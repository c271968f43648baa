rule base_model:
    """Convert the configured base model once to a safetensors directory (GGUF is de-quantised)."""
    output:
        out_dir=directory(f"{R}/base_model"),
    params:
        source=config["base_model"]["source"],
        path=config["base_model"]["path"],
        gguf_file=config["base_model"]["gguf_file"],
        revision=config["base_model"]["revision"],
        trust_remote_code=config["base_model"]["trust_remote_code"],
    log:
        f"{R}/logs/base_model.log",
    benchmark:
        f"{R}/benchmarks/base_model.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/base_model.py"
