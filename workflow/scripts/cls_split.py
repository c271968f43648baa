from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.tasks.seq_cls.data", "split_classification_data")  # noqa: F821 (snakemake is injected)
