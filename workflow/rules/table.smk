rule table:
    """results/comparison.{csv,md}: one row per grid point plus the base row, best run marked."""
    input:
        base_metrics=rules.evaluate_base.output.out_metrics,
        train_stats=expand(rules.train.output.out_stats, run=ALL_RUNS),  # written by `combine` for combinations
        metrics=expand(rules.evaluate.output.out_metrics, run=ALL_RUNS),
        merge_checks=expand(rules.merge.output.out_check, run=ADAPTER_RUNS),
        rank_summaries=expand(rules.rank_analysis.output.out_summary, run=ADAPTER_RUNS),
    output:
        out_csv=report(f"{R}/comparison.csv", caption="../report/comparison.rst", category="Comparison"),
        out_md=f"{R}/comparison.md",
        out_points_csv=f"{R}/comparison_by_point.csv",
    params:
        runs=ALL_RUNS,
        best_metric=config["table"]["best_metric"],
    log:
        f"{R}/logs/table.log",
    benchmark:
        f"{R}/benchmarks/table.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/table.py"
