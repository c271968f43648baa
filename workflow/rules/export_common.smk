# Helpers of rules/export.smk (kept apart from the rules, as `snakemake --lint` asks).

import json

EXPORT_DIR = f"{R}/export"
CARD_KEYS = ["lora_dropout", "learning_rate", "learning_rate_full", "weight_decay", "epochs", "max_steps", "batch_size",
             "grad_accum", "warmup_steps", "lr_scheduler", "max_grad_norm", "precision", "early_stopping_patience"]
CARD_TRAIN = {k: config["train"][k] for k in CARD_KEYS if k in config["train"]}  # the hyperparameters a card lists
FULL_RUNS = [name for name, hp in ALL_RUNS.items() if hp["method"] == "full"]


def exported_runs(wildcards=None):
    """The runs to export: export.runs, or the table's best run (after the checkpoint ran)."""
    if EXPORT["runs"] != "best":
        return list(EXPORT["runs"])
    with open(checkpoints.export_select.get().output.out_json, encoding="utf-8") as fh:
        return json.load(fh)["runs"]


def export_model_dir(wildcards):
    """The merged model of an adapter run; a fully fine-tuned run's model is its `adapter` directory."""
    run_dir = f"{R}/runs/{wildcards.run}"
    return f"{run_dir}/adapter" if ALL_RUNS[wildcards.run]["method"] == "full" else f"{run_dir}/merged"


def provenance_inputs(wildcards):
    inputs = {
        "model_dir": rules.base_model.output.out_dir,
        "split_stats": rules.split.output.stats_path,
        "tokens_meta": rules.tokenize.output.meta_path,
        "format_stats": rules.format.output.stats_path,
    }
    if not HUB_DATA:
        inputs["data_path"] = clean_inputs(wildcards)["data_path"]
    return inputs
