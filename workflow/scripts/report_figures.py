from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.report.stage", "make_report")  # noqa: F821 (snakemake is injected)
