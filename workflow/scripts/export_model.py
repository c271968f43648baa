from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.ship.export", "export_run")  # noqa: F821 (snakemake is injected)
