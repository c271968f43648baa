from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.export", "select_runs")  # noqa: F821 (snakemake is injected)
