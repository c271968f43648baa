from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.synth", "generate_dataset")  # noqa: F821 (snakemake is injected)
