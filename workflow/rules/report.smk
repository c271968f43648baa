rule report_figures:
    """Figures and before/after samples for `snakemake --report`, also kept under results/plots/."""
    input:
        comparison=rules.table.output.out_csv,
        train_logs=expand(rules.train.output.out_log, run=RUNS),
        samples=expand(rules.evaluate.output.out_samples, run=ALL_RUNS),
    output:
        out_losses=report(f"{R}/plots/losses.png", caption="../report/losses.rst", category="Training"),
        out_heatmap=report(f"{R}/plots/heatmap.png", caption="../report/heatmap.rst", category="Comparison"),
        out_pareto=report(f"{R}/plots/pareto.png", caption="../report/pareto.rst", category="Comparison"),
        out_samples=report(f"{R}/plots/samples.html", caption="../report/samples.rst", category="Samples"),
    params:
        # run_names: the runs of `samples`, in order; train_logs are those of the trained runs (RUNS come first)
        hp=settings(run_names=list(ALL_RUNS), metric=config["table"]["best_metric"], n_samples=config["evaluate"]["samples_in_report"]),
    log:
        f"{R}/logs/report_figures.log",
    benchmark:
        f"{R}/benchmarks/report_figures.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/report_figures.py"
