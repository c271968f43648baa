from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.search.halving", "train_rung")  # noqa: F821 (snakemake is injected)
