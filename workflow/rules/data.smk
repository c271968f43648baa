rule builtin_dataset:
    """The default data, seeded, with dirty rows (causal_lm: a bilingual QA set about a fictional company;
    seq_cls: bilingual product reviews labelled positive/negative)."""
    output:
        out_path=f"{R}/data/raw.jsonl",
    params:
        task=TASK,
        **task_io("builtin_dataset")["params"],
    log:
        f"{R}/logs/builtin_dataset.log",
    benchmark:
        f"{R}/benchmarks/builtin_dataset.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/builtin_dataset.py"


CLEAN = task_io("clean")


rule clean:
    """Keep legitimate text, repair what is shown to be broken (causal_lm; seq_cls normalises the text),
    record every change; reject unusable rows with a reason. rows in = clean + rejected."""
    input:
        **CLEAN["input"],
    output:
        **CLEAN["output"],
    params:
        task=TASK,
        **CLEAN["params"],
    log:
        f"{R}/logs/clean.log",
    benchmark:
        f"{R}/benchmarks/clean.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/clean.py"


if CAUSAL_LM:

    rule format:
        """Render ChatML (the tokenizer's chat template, else built-in) and locate assistant spans."""
        input:
            clean_path=rules.clean.output.out_clean,
            model_dir=rules.base_model.output.out_dir,
        output:
            out_path=f"{R}/data/formatted.jsonl",
            stats_path=f"{R}/data/format_stats.json",
        params:
            system_prompt=SYSTEM_PROMPT,
        log:
            f"{R}/logs/format.log",
        benchmark:
            f"{R}/benchmarks/format.tsv"
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/format.py"


SPLIT = task_io("split")


rule split:
    """Seeded train/val/test split (causal_lm: one normalised prompt never spans two splits; seq_cls:
    stratified by label). rows in = train + val + test + rejected."""
    input:
        **SPLIT["input"],
    output:
        **SPLIT["output"],
    params:
        task=TASK,
        **SPLIT["params"],
    log:
        f"{R}/logs/split.log",
    benchmark:
        f"{R}/benchmarks/split.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/split.py"
