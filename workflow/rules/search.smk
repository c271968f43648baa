# The rules of successive halving; the plan they follow (rungs, cuts, per-run inputs) is in search_common.smk.


if HALVING and RUNG_STEPS:

    rule halving_rung:
        """One point trained from its previous rung's checkpoint (none at rung 0) to the rung's step budget of
        its own schedule: its checkpoint (adapter, optimizer, scheduler, random state) and its validation loss there
        (with table.retention_floor, its validation retention too).
        """
        input:
            **{k: v for k, v in TRAIN["input"].items() if k != "resume_from"},
            model_dir=rules.base_model.output.out_dir,
            resume_from=lambda wc: f"{R}/search/rung{int(wc.k) - 1}/{wc.run}" if int(wc.k) > 0 else [],
            # a function: evaluate.smk (the base's scores) is read after this file
            base_scores=lambda wc: rules.evaluate_base.output.out_scores if RUNG_RETENTION else [],
        output:
            out_checkpoint=directory(f"{R}/search/rung{{k}}/{{run}}"),
            out_result=f"{R}/search/rung{{k}}/{{run}}.json",
        log:
            f"{R}/logs/halving_rung/rung{{k}}_{{run}}.log",
        benchmark:
            f"{R}/benchmarks/halving_rung/rung{{k}}_{{run}}.tsv"
        wildcard_constraints:
            k=r"\d+",
            run=TRAINED_RUN,
        conda:
            "../envs/train.yaml"
        threads: TRAIN_THREADS
        resources:
            gpu=config["train"]["nproc_per_node"],
        params:
            hp=lambda wc: settings(train_settings(wc), RUNG_RETENTION, stop_at=RUNG_STEPS[int(wc.k)]),
            runtime=TRAIN_RUNTIME,
            checkpoint_dir=lambda wc: f"{R}/checkpoints/search/rung{wc.k}/{wc.run}",
        script:
            "../scripts/halving_rung.py"

    checkpoint halving_select:
        """The cut after rung k: the best 1/eta of its points by validation loss (those holding
        table.retention_floor first), ties to the name that sorts first; its file carries the history of every cut
        so far."""
        input:
            results=lambda wc: expand(f"{R}/search/rung{wc.k}/{{run}}.json", run=live_points(int(wc.k))),
            previous=lambda wc: f"{R}/search/select{int(wc.k) - 1}.json" if int(wc.k) > 0 else [],
        output:
            out_select=f"{R}/search/select{{k}}.json",
        log:
            f"{R}/logs/halving_select/select{{k}}.log",
        benchmark:
            f"{R}/benchmarks/halving_select/select{{k}}.tsv"
        wildcard_constraints:
            k=r"\d+",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            hp=lambda wc: settings(
                dict(floor=RUNG_FLOOR) if RUNG_FLOOR else {},
                rung=int(wc.k),
                budget=RUNG_STEPS[int(wc.k)],
                eta=SEARCH["eta"],
            ),
        script:
            "../scripts/halving_select.py"

    rule halving_figure:
        """results/plots/halving.png: every point's validation loss rung by rung, the cuts marked, the pruned
        points ending in a cross, the survivors' curves running on to their final training."""
        input:
            halving=LAST_SELECT,
            train_stats=runs_of(rules.train.output.out_stats, RUNS),
        output:
            out_png=report(f"{R}/plots/halving.png", caption="../report/halving.rst", category="Training"),
        log:
            f"{R}/logs/halving_figure.log",
        benchmark:
            f"{R}/benchmarks/halving_figure.tsv"
        localrule: True
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/halving_figure.py"
