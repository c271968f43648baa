rule report_figures:
    """Figures and before/after samples for `snakemake --report`, also kept under results/plots/;
    the headline figure and captions/headline.rst open the report. Per-run files are matched by
    their run directory, never by list position."""
    input:
        comparison=rules.table.output.out_csv,
        points=rules.table.output.out_points_csv,
        effects=rules.table.output.out_effects_csv,
        train_logs=expand(rules.train.output.out_log, run=RUNS),
        samples=expand(rules.evaluate.output.out_samples, run=ALL_RUNS),
    output:
        out_headline=report(f"{R}/plots/headline.png", caption="../report/headline.rst", category="Comparison"),
        out_ranking=report(f"{R}/plots/ranking.png", caption="../report/ranking.rst", category="Comparison"),
        out_effects=report(f"{R}/plots/effects.png", caption="../report/effects.rst", category="Comparison"),
        out_tradeoff=report(f"{R}/plots/tradeoff.png", caption="../report/tradeoff.rst", category="Comparison"),
        out_losses=report(f"{R}/plots/losses.png", caption="../report/losses.rst", category="Training"),
        out_heatmap=report(f"{R}/plots/heatmap.png", caption="../report/heatmap.rst", category="Comparison"),
        out_pareto=report(f"{R}/plots/pareto.png", caption="../report/pareto.rst", category="Comparison"),
        out_samples=report(f"{R}/plots/samples.html", caption="../report/samples.rst", category="Samples"),
        out_captions=directory(f"{R}/plots/captions"),
    params:
        hp=settings(metric=config["table"]["best_metric"], n_samples=config["evaluate"]["samples_in_report"]),
    log:
        f"{R}/logs/report_figures.log",
    benchmark:
        f"{R}/benchmarks/report_figures.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/report_figures.py"
