from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.report.table", "write_comparison")  # noqa: F821 (snakemake is injected)
