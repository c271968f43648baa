from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.lm_eval_stage", "run_lm_eval")  # noqa: F821 (snakemake is injected)
