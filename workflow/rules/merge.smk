# merge.runs (MERGE_RUNS, merged_runs in common.smk): which runs get a merged model, each the size of the
# base model: the table's best run (default), every run with an adapter, or none. Wherever a merge is made
# its check runs: merged logits must equal base + adapter logits within merge.tolerance, or the job fails
# and keeps nothing.


rule merge:
    """merge_and_unload, verified: merged logits must equal base + adapter logits within tolerance.
    Not for method full (no adapter to merge): see ADAPTER_RUNS."""
    input:
        model_dir=rules.base_model.output.out_dir,
        adapter_dir=rules.train.output.out_adapter,
        test_path=rules.split.output.out_test,
    output:
        out_dir=directory(f"{R}/runs/{{run}}/merged"),
        out_check=f"{R}/runs/{{run}}/merge_check.json",
    log:
        f"{R}/logs/merge/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/merge/{{run}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        hp=lambda wc: settings(
            pick(config["merge"], ["tolerance", "deploy_tolerance_factor", "n_prompts", "speed_tokens"]),
            method=ALL_RUNS[wc.run]["method"],
            precision=EVAL_PRECISION,
            trust_remote_code=config["base_model"]["trust_remote_code"],
        ),
        runtime=RUNTIME,
    script:
        "../scripts/merge.py"


rule merge_summary:
    """results/merges.{csv,md}: the merge check (max |Δlogit| of merged vs base + adapter) and generation
    speed of base, base + adapter and merged model, for every merged run."""
    input:
        merge_checks=lambda wc: expand(rules.merge.output.out_check, run=merged_runs(wc)),
        best=[f"{R}/best.json"] if MERGE_RUNS == "best" else [],  # the table's output (table.smk)
    output:
        out_csv=report(f"{R}/merges.csv", caption="../report/merges.rst", category="Merge"),
        out_md=f"{R}/merges.md",
    log:
        f"{R}/logs/merge_summary.log",
    benchmark:
        f"{R}/benchmarks/merge_summary.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        hp=settings(policy=MERGE_RUNS),
    script:
        "../scripts/merge_summary.py"
