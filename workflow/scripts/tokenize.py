from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.data.tokenization", "tokenize_splits")  # noqa: F821 (snakemake is injected)
