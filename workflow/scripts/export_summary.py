from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.ship.export_summary", "write_export_summary")  # noqa: F821 (snakemake is injected)
