# Export: the chosen run as GGUF + Ollama Modelfile + model card, verified by loading what
# was written; every adapter as a self-describing package (files + card); results/serve.md.
# Not part of `all` unless export.enabled; `snakemake export` builds it on demand.
#
# Which run: `export.runs: best` is the run results/best.json names (written by the checkpoint `table`,
# the same file merge.runs: best reads), so with the default merge policy the export reads exactly the
# merged model the sweep makes; an explicit list needs no checkpoint. The export's input is the run's
# merged model (results/runs/<run>/merged), so Snakemake builds that merge, with its own logit check,
# for an exported run whatever merge.runs says. A fully fine-tuned run is exported from its model.

from loraflow.ship.export import check_export_config
from loraflow.ship.exportable import ExportError

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
    log:
        f"{R}/logs/export/provenance.log",
    benchmark:
        f"{R}/benchmarks/export/provenance.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        hp=settings(
            source=config["base_model"]["source"],
            path=config["base_model"]["path"],
            gguf_file=config["base_model"]["gguf_file"],
            data_spec=DATA["path"],
            system_prompt=DATA["system_prompt"],
        ),
    script:
        "../scripts/provenance.py"


rule adapter_package:
    """results/adapters/<run>/: the adapter's files (hard links) + its model card (README.md)."""
    input:
        adapter_dir=f"{R}/runs/{{run}}/adapter",
        comparison=rules.table.output.out_csv,
        train_stats=f"{R}/runs/{{run}}/train_stats.json",
        provenance=rules.provenance.output.out_json,
    output:
        out_dir=directory(f"{R}/adapters/{{run}}"),
    log:
        f"{R}/logs/export/adapter_{{run}}.log",
    benchmark:
        f"{R}/benchmarks/export/adapter_{{run}}.tsv"
    wildcard_constraints:
        run="|".join(re.escape(name) for name in sorted(ADAPTER_RUNS)) or "no-adapter-run",
    conda:
        "../../envs/data.yaml"
    params:
        hp=lambda wc: settings(
            CARD_SETTINGS, run=wc.run, hparams=ALL_RUNS[wc.run], merged_dir=f"{R}/runs/{wc.run}/merged"
        ),
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
    log:
        f"{R}/logs/export/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/export/{{run}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        hp=lambda wc: settings(
            CARD_SETTINGS,
            pick(
                EXPORT,
                [
                    "types",
                    "prompts",
                    "logit_prompts",
                    "q8_0_tokens",
                    "q8_0_min_agreement",
                    "tie_margin",
                    "f16_tolerance",
                    "llama_cpp",
                    "ollama_file",
                ],
            ),
            run=wc.run,
            hparams=ALL_RUNS[wc.run],
            adapters_dir=None if ALL_RUNS[wc.run]["method"] == "full" else f"{R}/adapters/{wc.run}",
            trust_remote_code=config["base_model"]["trust_remote_code"],
        ),
        runtime=RUNTIME,
    script:
        "../scripts/export_model.py"


rule serve:
    """results/serve.md: vLLM multi-LoRA, llama.cpp / Ollama and transformers + peft commands."""
    input:
        adapters=runs_of(f"{R}/adapters/{{run}}", ADAPTER_RUNS, evidence=False),  # under halving: the points that finished
        exports=lambda wc: expand(f"{EXPORT_DIR}/{{run}}", run=exported_runs()),
        base_model=rules.base_model.output.out_dir,
    output:
        out_md=f"{R}/serve.md",
    log:
        f"{R}/logs/export/serve.log",
    benchmark:
        f"{R}/benchmarks/export/serve.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        hp=settings(
            system_prompt=DATA["system_prompt"],
            max_new_tokens=config["evaluate"]["max_new_tokens"],
            full_models=[f"{R}/runs/{name}/adapter" for name in FULL_RUNS],
        ),
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
