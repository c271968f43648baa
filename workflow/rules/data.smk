rule builtin_dataset:
    """The default data: a seeded bilingual QA set about a fictional company, with dirty rows."""
    output:
        out_path=f"{R}/data/raw.jsonl",
    params:
        hp=settings(n_rows=DATA["builtin_rows"], seed=config["seed"]),
    log:
        f"{R}/logs/builtin_dataset.log",
    benchmark:
        f"{R}/benchmarks/builtin_dataset.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/builtin_dataset.py"


# clean.* settings, each passed to clean_dataset by name (all of them can change which rows are kept or how).
CLEAN_KEYS = ["min_answer_chars", "max_chars", "mojibake", "dedup", "strip_html", "nfkc", "remove_zero_width",
              "collapse_symbol_runs", "collapse_whitespace", "trim"]


rule clean:
    """Keep legitimate text, repair what is shown to be broken, record every change; reject unusable
    rows with a reason. rows in = clean + rejected."""
    input:
        unpack(clean_inputs),
    output:
        out_clean=f"{R}/data/clean.jsonl",
        out_rejected=f"{R}/data/rejected.jsonl",
        out_stats=f"{R}/data/clean_stats.json",
        out_changes=f"{R}/data/changes.jsonl",
        out_report=report(f"{R}/data/clean_report.html", caption="../report/clean.rst", category="Data"),
    params:
        hp=settings(
            columns=DATA["columns"],
            data_format=DATA["format"],
            encoding=DATA["encoding"],
            delimiter=DATA["delimiter"],
            hf_split=DATA["hf_split"],
            on_bad_row=DATA["on_bad_row"],
            system_prompt=DATA["system_prompt"],
            max_tokens=config["tokenize"]["max_length"],
            overlong=config["tokenize"]["overlong"],
            **pick(config["clean"], CLEAN_KEYS),
            **({"data_path": DATA["path"]} if HUB_DATA else {}),
        ),
    log:
        f"{R}/logs/clean.log",
    benchmark:
        f"{R}/benchmarks/clean.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/clean.py"


rule format:
    """Render ChatML (the tokenizer's chat template, else built-in) and locate assistant spans."""
    input:
        clean_path=rules.clean.output.out_clean,
        model_dir=rules.base_model.output.out_dir,
    output:
        out_path=f"{R}/data/formatted.jsonl",
        stats_path=f"{R}/data/format_stats.json",
    params:
        system_prompt=DATA["system_prompt"],
    log:
        f"{R}/logs/format.log",
    benchmark:
        f"{R}/benchmarks/format.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/format.py"


rule split:
    """Seeded train/val/test split; one normalised prompt never spans two splits."""
    input:
        formatted_path=rules.format.output.out_path,
        clean_stats_path=rules.clean.output.out_stats,
    output:
        out_train=f"{R}/data/train.jsonl",
        out_val=f"{R}/data/val.jsonl",
        out_test=f"{R}/data/test.jsonl",
        stats_path=f"{R}/data/split_stats.json",
    params:
        hp=settings(fractions=config["split"], seed=config["seed"]),
    log:
        f"{R}/logs/split.log",
    benchmark:
        f"{R}/benchmarks/split.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/split.py"
