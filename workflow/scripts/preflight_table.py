from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.train.preflight", "preflight_table")  # noqa: F821 (snakemake is injected)
