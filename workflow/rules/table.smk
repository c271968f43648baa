TABLE = task_io("table")  # tasks.smk


# A checkpoint: with merge.runs best (causal_lm), which run is merged is known only once the table has picked it.
checkpoint table:
    """results/comparison.{csv,md}: one row per run plus the baseline rows; best chosen on validation,
    test reported with paired-bootstrap intervals and the tied-for-best set (causal_lm also: main
    effects, retention, results/best.json naming the best run). Per-run files are matched by their run
    directory, never by list position. Waits for no merge (see merge.runs)."""
    input:
        **TABLE["input"],
    output:
        out_csv=report(f"{R}/comparison.csv", caption=TABLE["caption"], category="Comparison"),
        out_md=f"{R}/comparison.md",
        **TABLE["output"],
    params:
        task=TASK,
        **TABLE["params"],
    log:
        f"{R}/logs/table.log",
    benchmark:
        f"{R}/benchmarks/table.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/table.py"
