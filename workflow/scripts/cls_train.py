from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.tasks.seq_cls.train", "train_classifier")  # noqa: F821 (snakemake is injected)
