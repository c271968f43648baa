from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.data.builtin.support_qa", "generate_dataset")  # noqa: F821 (snakemake is injected)
