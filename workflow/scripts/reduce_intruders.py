from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.train.intruders", "reduce_intruders")  # noqa: F821 (snakemake is injected)
