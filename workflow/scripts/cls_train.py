from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.cls_train", "train_classifier")  # noqa: F821 (snakemake is injected)
