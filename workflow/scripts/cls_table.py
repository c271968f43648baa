from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.cls_table", "write_comparison")  # noqa: F821 (snakemake is injected)
