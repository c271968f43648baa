# How many rows the built-in data has, by task (config `task`; tasks.smk).
BUILTIN = {
    "causal_lm": {"n_rows": DATA["builtin_rows"], "n_products": DATA["builtin_products"]},
    "seq_cls": {"n_rows": CLS["builtin_rows"]},
}[TASK]


rule builtin_dataset:
    """The default data, seeded, with dirty rows (causal_lm: a bilingual QA set about a fictional company;
    seq_cls: bilingual product reviews labelled positive/negative)."""
    output:
        out_path=f"{R}/data/raw.jsonl",
    log:
        f"{R}/logs/builtin_dataset.log",
    benchmark:
        f"{R}/benchmarks/builtin_dataset.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        task=TASK,
        hp=settings(**BUILTIN, seed=config["seed"]),
    script:
        "../scripts/builtin_dataset.py"


# The task's part of clean (config `task`): what it reads, the files it adds, its settings.
CLEAN = {
    "causal_lm": lambda: {
        "input": clean_inputs(None),  # the raw data and the base model's tokenizer (common.smk)
        "output": {
            "out_changes": f"{R}/data/changes.jsonl",
            "out_report": report(f"{R}/data/clean_report.html", caption="../report/clean.rst", category="Data"),
        },
        "hp": settings(
            columns=DATA["columns"],
            data_format=DATA["format"],
            encoding=DATA["encoding"],
            delimiter=DATA["delimiter"],
            hf_split=DATA["hf_split"],
            on_bad_row=DATA["on_bad_row"],
            system_prompt=SYSTEM_PROMPT,
            max_tokens=config["tokenize"]["max_length"],
            overlong=config["tokenize"]["overlong"],
            **pick(clean_settings(config, workflow.source_path("../schemas/config.schema.yaml")), CLEAN_KEYS),
            **({"data_path": DATA["path"]} if HUB_DATA else {}),
        ),
    },
    "seq_cls": lambda: {  # text + label per row
        "input": {"data_path": f"{R}/data/raw.jsonl" if CLS["data"] == "builtin" else CLS["data"]},
        "output": {},
        "hp": settings(
            pick(CLS, ["text_column", "label_column", "encoding", "max_chars", "dedup", "labels"]),
            data_format=CLS["format"],
            on_bad_row=config["data"]["on_bad_row"],
        ),
    },
}[TASK]()


rule clean:
    """Keep legitimate text, repair what is shown to be broken (causal_lm; seq_cls normalises the text),
    record every change; reject unusable rows with a reason. rows in = clean + rejected."""
    input:
        **CLEAN["input"],
    output:
        **CLEAN["output"],
        out_clean=f"{R}/data/clean.jsonl",
        out_rejected=f"{R}/data/rejected.jsonl",
        out_stats=f"{R}/data/clean_stats.json",
    log:
        f"{R}/logs/clean.log",
    benchmark:
        f"{R}/benchmarks/clean.tsv"
    conda:
        "../envs/data.yaml"
    params:
        task=TASK,
        hp=CLEAN["hp"],
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
        log:
            f"{R}/logs/format.log",
        benchmark:
            f"{R}/benchmarks/format.tsv"
        conda:
            "../envs/data.yaml"
        params:
            system_prompt=SYSTEM_PROMPT,
        script:
            "../scripts/format.py"


# The task's part of split (config `task`): the rows it splits, the files and settings it adds.
SPLIT = {
    "causal_lm": lambda: {  # the ChatML rows, grouped by prompt
        "input": {"formatted_path": rules.format.output.out_path},
        "output": {},
        "hp": {},
    },
    "seq_cls": lambda: {  # stratified by label; labels.json fixes id2label
        "input": {"clean_path": rules.clean.output.out_clean},
        "output": {"out_labels": f"{R}/data/labels.json"},
        "hp": {"labels": CLS["labels"]},
    },
}[TASK]()


rule split:
    """Seeded train/val/test split (causal_lm: one normalised prompt never spans two splits; seq_cls:
    stratified by label). rows in = train + val + test + rejected."""
    input:
        **SPLIT["input"],
        clean_stats_path=rules.clean.output.out_stats,
    output:
        **SPLIT["output"],
        out_train=f"{R}/data/train.jsonl",
        out_val=f"{R}/data/val.jsonl",
        out_test=f"{R}/data/test.jsonl",
        stats_path=f"{R}/data/split_stats.json",
    log:
        f"{R}/logs/split.log",
    benchmark:
        f"{R}/benchmarks/split.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        task=TASK,
        hp=settings(SPLIT["hp"], fractions=config["split"], seed=config["seed"]),
    script:
        "../scripts/split.py"
