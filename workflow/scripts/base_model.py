from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.model.base_model", "prepare_base_model")  # noqa: F821 (snakemake is injected)
