# Experiment tracking (config `tracking`): the finished results mirrored into MLflow and TensorBoard.
# Included only when a tracker is on, so a sweep without tracking plans no extra job. The rule reads
# the results files after the table and never feeds a result: tracking cannot fail or change a training job.

from types import SimpleNamespace

TRACKING = config["tracking"]


# {run: its settings}: a trained run's as its train job got them (params hp), others' grid point.
TRACKED_POINTS = {
    name: dict(TRAIN["hp"](SimpleNamespace(run=name)) if name in RUNS else point)
    for name, point in sorted(ALL_RUNS.items())
}


rule track:
    """results/tracking.json: what was mirrored (MLflow: one child run per grid point under the sweep's
    run, created, updated, replaced or left unchanged; TensorBoard: results/runs/<run>/tb/). A tracker
    that fails is reported and the rule still succeeds."""
    input:
        runs_of(rules.train.output.out_log, RUNS, evidence=False),  # under halving: the points that finished
        runs_of(rules.train.output.out_stats, RUNS, evidence=False),
        # the adapter cards, when the export builds them (they are artefacts of the runs)
        runs_of(f"{R}/adapters/{{run}}", ADAPTER_RUNS, evidence=False)
        if CAUSAL_LM and config["export"]["enabled"]
        else [],
        rules.table.output.out_md,
        comparison_csv=rules.table.output.out_csv,
    output:
        out_status=f"{R}/tracking.json",
    log:
        f"{R}/logs/track.log",
    benchmark:
        f"{R}/benchmarks/track.tsv"
    localrule: True  # a login node reaches the tracking server where compute nodes may not
    conda:
        "../envs/tracking.yaml"
    params:
        points=TRACKED_POINTS,
        tracking=TRACKING,
    script:
        "../scripts/track.py"
