from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.tasks.seq_cls.evaluate", "evaluate_majority")  # noqa: F821 (snakemake is injected)
