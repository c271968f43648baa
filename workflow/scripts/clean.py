from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.data.clean", "clean_dataset")  # noqa: F821 (snakemake is injected)
