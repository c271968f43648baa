# A checkpoint: with merge.runs best, which run is merged is known only once the table has picked it.
checkpoint table:
    """results/comparison.{csv,md}: one row per run plus the base row; best chosen on validation,
    test reported with paired-bootstrap intervals, tied-for-best set, main effects, retention;
    results/best.json names the best run. Per-run files are matched by their run directory, never by
    list position. Waits for no merge (see merge.runs)."""
    input:
        base_metrics=rules.evaluate_base.output.out_metrics,
        base_scores=rules.evaluate_base.output.out_scores,
        scores=expand(rules.evaluate.output.out_scores, run=ALL_RUNS),
        train_stats=expand(rules.train.output.out_stats, run=ALL_RUNS),  # written by `combine` for combinations
        metrics=expand(rules.evaluate.output.out_metrics, run=ALL_RUNS),
        merge_checks=[],  # merges come after the table; their checks are in results/merges.{csv,md}
        rank_summaries=expand(rules.rank_analysis.output.out_summary, run=ADAPTER_RUNS),
        lm_eval=expand(rules.lm_eval.output.out_json, run=ALL_RUNS) if EVAL["lm_eval_tasks"] else [],
        base_lm_eval=rules.lm_eval_base.output.out_json if EVAL["lm_eval_tasks"] else [],
    output:
        out_csv=report(f"{R}/comparison.csv", caption="../report/comparison.rst", category="Comparison"),
        out_md=f"{R}/comparison.md",
        out_points_csv=f"{R}/comparison_by_point.csv",
        out_effects_csv=f"{R}/comparison_effects.csv",
        out_best=f"{R}/best.json",
    params:
        hp=settings(
            runs=ALL_RUNS,
            best_metric=config["table"]["best_metric"],
            bootstrap_samples=config["table"]["bootstrap_samples"],
            confidence=config["table"]["confidence"],
            seed=config["seed"],
        ),
    log:
        f"{R}/logs/table.log",
    benchmark:
        f"{R}/benchmarks/table.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/table.py"
