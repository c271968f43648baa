from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.data.replay", "build_replay")  # noqa: F821 (snakemake is injected)
