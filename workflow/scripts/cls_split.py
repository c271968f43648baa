from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.cls_data", "split_classification_data")  # noqa: F821 (snakemake is injected)
