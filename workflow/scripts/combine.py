from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.train.combine", "combine_adapters")  # noqa: F821 (snakemake is injected)
