from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.evaluate.rank_analysis", "analyse_adapter")  # noqa: F821 (snakemake is injected)
