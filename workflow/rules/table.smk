# The task's part of the table (config `task`): what it reads, the files it adds, its settings, the report caption.
TABLE = {
    "causal_lm": lambda: {
        "caption": "../report/comparison.rst",
        "input": {
            "base_metrics": rules.evaluate_base.output.out_metrics,
            "base_scores": rules.evaluate_base.output.out_scores,
            # runs_of (search_common.smk): every run for the grid, under halving the points that trained to the end
            "scores": runs_of(rules.evaluate.output.out_scores, ALL_RUNS),
            "train_stats": runs_of(rules.train.output.out_stats, ALL_RUNS),  # written by `combine` for combinations
            "metrics": runs_of(rules.evaluate.output.out_metrics, ALL_RUNS),
            "merge_checks": [],  # merges come after the table; their checks are in results/merges.{csv,md}
            "rank_summaries": runs_of(rules.rank_analysis.output.out_summary, ADAPTER_RUNS),
            "lm_eval": runs_of(rules.lm_eval.output.out_json, ALL_RUNS) if EVAL["lm_eval_tasks"] else [],
            **({"halving": LAST_SELECT} if LAST_SELECT else {}),  # who was pruned where: their rows
            "base_lm_eval": rules.lm_eval_base.output.out_json if EVAL["lm_eval_tasks"] else [],
            "test_rows": rules.split.output.out_test,  # row groups for the clustered bootstrap (table.cluster_by)
        },
        "output": {
            "out_points_csv": f"{R}/comparison_by_point.csv",
            "out_effects_csv": f"{R}/comparison_effects.csv",
            "out_best": f"{R}/best.json",
        },
        # the forgetting-aware choice and the row groups change the table: in hp, so changing them reruns it
        "hp": settings(
            table_settings(ALL_RUNS, config["table"]["best_metric"]),
            pick(config["table"], ["select", "retention_floor", "cluster_by"]),
        ),
    },
    "seq_cls": lambda: {  # one row per grid point plus the two baselines (majority: rule majority, evaluate.smk)
        "caption": "../report/cls_comparison.rst",
        "input": {
            "baseline_metrics": [rules.majority.output.out_metrics, rules.evaluate_base.output.out_metrics],
            "train_stats": expand(rules.train.output.out_stats, run=RUNS),
            "metrics": expand(rules.evaluate.output.out_metrics, run=RUNS),
            "predictions": expand(rules.evaluate.output.out_predictions, run=RUNS),
            "baseline_predictions": [rules.majority.output.out_predictions, rules.evaluate_base.output.out_predictions],
        },
        "output": {},
        "hp": table_settings(RUNS, CLS["best_metric"]),  # tasks.smk
    },
}[TASK]()


# A checkpoint: with merge.runs best (causal_lm), which run is merged is known only once the table has picked it.
checkpoint table:
    """results/comparison.{csv,md}: one row per run plus the baseline rows; best chosen on validation,
    test reported with paired-bootstrap intervals and the tied-for-best set (causal_lm also: main
    effects, retention, results/best.json naming the best run). Per-run files are matched by their run
    directory, never by list position. Waits for no merge (see merge.runs)."""
    input:
        **TABLE["input"],
    output:
        **TABLE["output"],
        out_csv=report(f"{R}/comparison.csv", caption=TABLE["caption"], category="Comparison"),
        out_md=f"{R}/comparison.md",
    log:
        f"{R}/logs/table.log",
    benchmark:
        f"{R}/benchmarks/table.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        task=TASK,
        hp=TABLE["hp"],
    script:
        "../scripts/table.py"
