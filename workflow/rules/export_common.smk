# Helpers of rules/export.smk (kept apart from the rules, as `snakemake --lint` asks).

from loraflow.binding import field_names
from loraflow.tasks.causal_lm.settings import LearningRate
from loraflow.train.settings import TrainSettings, card_fields

EXPORT_DIR = f"{R}/export"
# The train settings a model card lists: the learning rates and the shared train settings that make the recipe.
CARD_KEYS = [*field_names(LearningRate), *card_fields(TrainSettings)]
CARD_TRAIN = {k: config["train"][k] for k in CARD_KEYS if k in config["train"]}  # the hyperparameters a card lists
FULL_RUNS = [name for name, hp in ALL_RUNS.items() if hp["method"] == "full"]
# What every model card states besides the run itself (params `hp` of adapter_package and export_model).
CARD_SETTINGS = settings(
    train_config=CARD_TRAIN, system_prompt=DATA["system_prompt"], max_new_tokens=config["evaluate"]["max_new_tokens"]
)


def exported_runs(wildcards=None):
    """The runs to export: export.runs, or the run results/best.json names (after the checkpoint
    `table` ran; merge.runs: best merges the same run)."""
    from loraflow.ship.export import runs_to_export

    if EXPORT["runs"] != "best":
        return runs_to_export(EXPORT["runs"])
    return runs_to_export("best", checkpoints.table.get().output.out_best)


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
