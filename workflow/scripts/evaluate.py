from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.evaluate.run", "evaluate_run")  # noqa: F821 (snakemake is injected)
