from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.data.builtin.reviews", "generate_reviews")  # noqa: F821 (snakemake is injected)
