from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.tasks.seq_cls.table", "write_comparison")  # noqa: F821 (snakemake is injected)
