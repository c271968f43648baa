from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.ship.serve", "write_serve")  # noqa: F821 (snakemake is injected)
