from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.ship.provenance", "write_provenance")  # noqa: F821 (snakemake is injected)
