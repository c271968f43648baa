# A checkpoint: with merge.runs best, which run is merged is known only once the table has picked it.
checkpoint table:
    """results/comparison.{csv,md}: one row per grid point plus the base row, best run marked;
    results/best.json names the best run. Waits for no merge (see merge.runs)."""
    input:
        base_metrics=rules.evaluate_base.output.out_metrics,
        train_stats=expand(rules.train.output.out_stats, run=ALL_RUNS),  # written by `combine` for combinations
        metrics=expand(rules.evaluate.output.out_metrics, run=ALL_RUNS),
        merge_checks=[],  # merges come after the table; their checks are in results/merges.{csv,md}
        rank_summaries=expand(rules.rank_analysis.output.out_summary, run=ADAPTER_RUNS),
    output:
        out_csv=report(f"{R}/comparison.csv", caption="../report/comparison.rst", category="Comparison"),
        out_md=f"{R}/comparison.md",
        out_points_csv=f"{R}/comparison_by_point.csv",
        out_best=f"{R}/best.json",
    params:
        hp=settings(runs=ALL_RUNS, best_metric=config["table"]["best_metric"]),
    log:
        f"{R}/logs/table.log",
    benchmark:
        f"{R}/benchmarks/table.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/table.py"
