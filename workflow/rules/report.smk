rule report_figures:
    """Figures, the sortable comparison table and before/after samples for `snakemake --report`, also
    kept under results/plots/; captions/headline.rst and the headline figure (captions/headline_figure.rst,
    the image inside it) open the report. Per-run files are matched by
    their run directory, never by list position."""
    input:
        comparison=rules.table.output.out_csv,
        points=rules.table.output.out_points_csv,
        effects=rules.table.output.out_effects_csv,
        train_logs=runs_of(rules.train.output.out_log, RUNS),  # search.smk: under halving, the points that finished
        samples=runs_of(rules.evaluate.output.out_samples, ALL_RUNS),
    output:
        out_headline=report(f"{R}/plots/headline.png", caption="../report/headline.rst", category="Comparison"),
        out_ranking=report(f"{R}/plots/ranking.png", caption="../report/ranking.rst", category="Comparison"),
        out_effects=report(f"{R}/plots/effects.png", caption="../report/effects.rst", category="Comparison"),
        out_tradeoff=report(f"{R}/plots/tradeoff.png", caption="../report/tradeoff.rst", category="Comparison"),
        out_losses=report(f"{R}/plots/losses.png", caption="../report/losses.rst", category="Training"),
        out_heatmap=report(f"{R}/plots/heatmap.png", caption="../report/heatmap.rst", category="Comparison"),
        out_pareto=report(f"{R}/plots/pareto.png", caption="../report/pareto.rst", category="Comparison"),
        out_samples=report(f"{R}/plots/samples.html", caption="../report/samples.rst", category="Samples"),
        # the table itself, sortable (the report offers comparison.csv only as a download)
        out_table_html=report(
            f"{R}/plots/comparison.html", caption="../report/comparison_table.rst", category="Comparison"
        ),
        out_captions=directory(f"{R}/plots/captions"),
    log:
        f"{R}/logs/report_figures.log",
    benchmark:
        f"{R}/benchmarks/report_figures.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        hp=settings(metric=config["table"]["best_metric"], n_samples=config["evaluate"]["samples_in_report"]),
    script:
        "../scripts/report_figures.py"


rule choice_figure:
    """The choice the table made, as a picture: every run's validation score against its validation
    retention, the retention floor, the learned-vs-forgotten Pareto set, the chosen run and the best one
    rejected for forgetting (all on validation: the figures that chose)."""
    input:
        table=rules.table.output.out_csv,
    output:
        out_png=report(
            f"{R}/plots/learned_forgotten.png", caption="../report/learned_forgotten.rst", category="Comparison"
        ),
    log:
        f"{R}/logs/choice_figure.log",
    benchmark:
        f"{R}/benchmarks/choice_figure.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        hp=settings(metric=config["table"]["best_metric"], floor=config["table"]["retention_floor"]),
    script:
        "../scripts/choice_figure.py"
