from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.ship.adapter_package", "package_adapter")  # noqa: F821 (snakemake is injected)
