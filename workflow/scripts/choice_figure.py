from loraflow.runner import call_stage

call_stage(snakemake, "loraflow.report.pareto", "plot_learned_forgotten")  # noqa: F821 (snakemake is injected)
