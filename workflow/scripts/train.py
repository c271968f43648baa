from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.train.loop", "train_lora")  # noqa: F821 (snakemake is injected)
