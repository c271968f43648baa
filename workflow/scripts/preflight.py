from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.preflight", "preflight_grid")  # noqa: F821 (snakemake is injected)
