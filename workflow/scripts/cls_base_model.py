from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.tasks.seq_cls.model", "export_base_model")  # noqa: F821 (snakemake is injected)
