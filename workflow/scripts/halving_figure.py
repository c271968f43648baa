from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.report.halving", "plot_halving")  # noqa: F821 (snakemake is injected)
