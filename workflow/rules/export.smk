# Export (issue 15): the chosen run as GGUF + Ollama Modelfile + model card, verified by loading what
# was written; every adapter as a self-describing package (files + card); results/serve.md.
# Not part of `all` unless export.enabled; `snakemake export` builds it on demand.
#
# Which run: `export.runs: best` reads the table's choice (comparison.csv's `best` column) in the
# checkpoint `export_select`, so the DAG is completed after the table exists; an explicit list needs no
# checkpoint. The export reads the run's merged model (results/runs/<run>/merged), so Snakemake builds
# that merge, with its own logit check, whatever merge policy the sweep uses.

from loraflow.export import check_export_config
from loraflow.gguf_export import ExportError

EXPORT = config["export"]
try:
    check_export_config(config, ALL_RUNS)
except ExportError as err:
    raise WorkflowError(f"invalid configuration: {err}")

include: "export_common.smk"


rule provenance:
    """Digests of the base model (original file and converted weights) and the data, rows per split,
    licence: computed once per sweep for every model card."""
    input:
        unpack(provenance_inputs),
    output:
        out_json=f"{EXPORT_DIR}/provenance.json",
    params:
        source=config["base_model"]["source"],
        path=config["base_model"]["path"],
        gguf_file=config["base_model"]["gguf_file"],
        data_spec=DATA["path"],
        system_prompt=DATA["system_prompt"],
    log:
        f"{R}/logs/export/provenance.log",
    benchmark:
        f"{R}/benchmarks/export/provenance.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/provenance.py"


checkpoint export_select:
    """results/export/selected.json: the runs to export (the best run of the table, or export.runs)."""
    input:
        comparison=rules.table.output.out_csv,
    output:
        out_json=f"{EXPORT_DIR}/selected.json",
    params:
        runs=EXPORT["runs"],
        known_runs=list(ALL_RUNS),
        best_json=f"{R}/best.json",
    log:
        f"{R}/logs/export/select.log",
    benchmark:
        f"{R}/benchmarks/export/select.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/export_select.py"


rule adapter_package:
    """results/adapters/<run>/: the adapter's files (hard links) + its model card (README.md)."""
    wildcard_constraints:
        run="|".join(re.escape(name) for name in sorted(ADAPTER_RUNS)) or "no-adapter-run",
    input:
        adapter_dir=f"{R}/runs/{{run}}/adapter",
        comparison=rules.table.output.out_csv,
        train_stats=f"{R}/runs/{{run}}/train_stats.json",
        provenance=rules.provenance.output.out_json,
    output:
        out_dir=directory(f"{R}/adapters/{{run}}"),
    params:
        run=lambda wc: wc.run,
        hparams=lambda wc: ALL_RUNS[wc.run],
        train_config=CARD_TRAIN,
        system_prompt=DATA["system_prompt"],
        max_new_tokens=config["evaluate"]["max_new_tokens"],
        merged_dir=lambda wc: f"{R}/runs/{wc.run}/merged",
    log:
        f"{R}/logs/export/adapter_{{run}}.log",
    benchmark:
        f"{R}/benchmarks/export/adapter_{{run}}.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/adapter_package.py"


rule export_model:
    """results/export/<run>/: model-<type>.gguf, Modelfile, README.md, export_check.json - every file
    read back and checked against the merged model; a failed check fails the job."""
    input:
        model_dir=export_model_dir,
        test_path=rules.split.output.out_test,
        comparison=rules.table.output.out_csv,
        train_stats=f"{R}/runs/{{run}}/train_stats.json",
        provenance=rules.provenance.output.out_json,
    output:
        out_dir=directory(f"{EXPORT_DIR}/{{run}}"),
    params:
        run=lambda wc: wc.run,
        hparams=lambda wc: ALL_RUNS[wc.run],
        train_config=CARD_TRAIN,
        adapters_dir=lambda wc: None if ALL_RUNS[wc.run]["method"] == "full" else f"{R}/adapters/{wc.run}",
        types=EXPORT["types"],
        system_prompt=DATA["system_prompt"],
        max_new_tokens=config["evaluate"]["max_new_tokens"],
        prompts=EXPORT["prompts"],
        logit_prompts=EXPORT["logit_prompts"],
        q8_0_tokens=EXPORT["q8_0_tokens"],
        q8_0_min_agreement=EXPORT["q8_0_min_agreement"],
        f16_tolerance=EXPORT["f16_tolerance"],
        llama_cpp=EXPORT["llama_cpp"],
        threads=config["torch_threads"],
        trust_remote_code=config["base_model"]["trust_remote_code"],
    threads: max(1, config["torch_threads"])  # scheduling slots; torch_threads sets the compute threads
    resources:
        gpu=1,
    log:
        f"{R}/logs/export/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/export/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/export_model.py"


rule serve:
    """results/serve.md: vLLM multi-LoRA, llama.cpp / Ollama and transformers + peft commands."""
    input:
        adapters=expand(f"{R}/adapters/{{run}}", run=ADAPTER_RUNS),
        exports=lambda wc: expand(f"{EXPORT_DIR}/{{run}}", run=exported_runs()),
        base_model=rules.base_model.output.out_dir,
    output:
        out_md=f"{R}/serve.md",
    params:
        system_prompt=DATA["system_prompt"],
        max_new_tokens=config["evaluate"]["max_new_tokens"],
        full_models=[f"{R}/runs/{name}/adapter" for name in FULL_RUNS],
    log:
        f"{R}/logs/export/serve.log",
    benchmark:
        f"{R}/benchmarks/export/serve.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/serve.py"


rule export:
    """results/export/summary.{csv,md}: the checks of every exported file (shown in the report)."""
    input:
        checks=lambda wc: expand(f"{EXPORT_DIR}/{{run}}", run=exported_runs()),
        serve_md=rules.serve.output.out_md,
    output:
        out_csv=report(f"{EXPORT_DIR}/summary.csv", caption="../report/export.rst", category="Export"),
        out_md=f"{EXPORT_DIR}/summary.md",
    log:
        f"{R}/logs/export/summary.log",
    benchmark:
        f"{R}/benchmarks/export/summary.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/export_summary.py"


EXPORT_TARGETS = [*rules.export.output]
