from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.data.split", "split_dataset")  # noqa: F821 (snakemake is injected)
