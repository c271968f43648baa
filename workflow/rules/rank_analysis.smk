rule rank_analysis:
    """Singular values and effective rank (90 % / 99 % energy) of every learned update ΔW = s·B·A:
    would a smaller r have sufficed? And the intruder dimensions of every tuned weight W + ΔW (the
    base's weights are read one tensor at a time; no GPU).
    Not for method full (no adapter): expand over ADAPTER_RUNS."""
    input:
        adapter_dir=rules.train.output.out_adapter,
        model_dir=rules.base_model.output.out_dir,
    output:
        out_csv=f"{R}/runs/{{run}}/rank_analysis.csv",
        out_summary=f"{R}/runs/{{run}}/rank_summary.json",
        out_plot=report(
            f"{R}/runs/{{run}}/rank_analysis.png",
            caption="../report/rank_analysis.rst",
            category="Rank analysis",
            subcategory="{run}",
        ),
    log:
        f"{R}/logs/rank_analysis/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/rank_analysis/{{run}}.tsv"
    conda:
        "../envs/train.yaml"
    params:
        hp=settings(pick(config["rank_analysis"], ["energies", "intruder_top_k", "intruder_threshold"])),
    script:
        "../scripts/rank_analysis.py"
