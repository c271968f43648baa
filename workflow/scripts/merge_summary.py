from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.merge_summary", "write_merge_summary")  # noqa: F821 (snakemake is injected)
