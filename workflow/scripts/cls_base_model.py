from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.cls_model", "export_base_model")  # noqa: F821 (snakemake is injected)
