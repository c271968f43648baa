from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.cls_evaluate", "evaluate_adapter")  # noqa: F821 (snakemake is injected)
