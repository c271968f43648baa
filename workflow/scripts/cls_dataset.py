from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.cls_synth", "generate_reviews")  # noqa: F821 (snakemake is injected)
