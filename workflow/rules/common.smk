# Helpers shared by the rules. No heavy imports here: this file is parsed on every invocation.

import re

from loraflow.config import clean_settings, system_prompt


wildcard_constraints:
    run="|".join(re.escape(name) for name in sorted(ALL_RUNS)),


DATA = config["data"]
SYSTEM_PROMPT = system_prompt(DATA)  # null: the built-in set's own prompt for the built-in data, none for yours
HUB_DATA = DATA["path"].startswith("hf:")


def clean_inputs(wildcards):
    """The raw data file (generated, or the user's) and the base model's tokenizer."""
    inputs = {"model_dir": f"{R}/base_model"}
    if not HUB_DATA:
        inputs["data_path"] = f"{R}/data/raw.jsonl" if DATA["path"] == "builtin" else DATA["path"]
    return inputs


# search.method halving: rungs of training with cuts between them (search.smk); grid: every point to the end.
HALVING = config["search"]["method"] == "halving"
# Runs with an adapter (to merge and to analyse); a fully fine-tuned model has none.
ADAPTER_RUNS = [name for name, hp in ALL_RUNS.items() if hp["method"] != "full"]
# The run wildcard of the rules that only trained runs have (not the combinations).
TRAINED_RUN = "|".join(re.escape(name) for name in sorted(RUNS))

# The deploy precision of evaluation, merge and combine (evaluate.precision; `train` follows train.precision).
EVAL_PRECISION = (
    config["train"]["precision"] if config["evaluate"]["precision"] == "train" else config["evaluate"]["precision"]
)


def best_run(best_json) -> str:
    """The run the table marked best (results/best.json)."""
    import json

    with open(best_json, encoding="utf-8") as fh:
        return json.load(fh)["run"]


def train_settings(wildcards):
    """params `hp` of a train job: its grid point, the TRAIN_KEYS (train.smk), and the learning rate its
    method uses: the run's own (grid.learning_rate axis, else train.learning_rate; learning_rate_full for full)."""
    run = RUNS[wildcards.run]
    full = run["method"] == "full"
    keys = [k for k in TRAIN_KEYS if not (full and k == "lora_dropout")]  # no adapter, no dropout
    lr_key = "learning_rate_full" if full else "learning_rate"
    replay = (
        {"replay": config["train"]["replay"]} if REPLAY else {}
    )  # absent at 0: runs without replay keep their params
    return settings(
        pick(run, GRID_KEYS),
        pick(config["train"], keys),
        {lr_key: run["learning_rate"]},
        replay,
        trust_remote_code=config["base_model"]["trust_remote_code"],
    )


MERGE_RUNS = config["merge"]["runs"]


def merged_runs(wildcards=None) -> list[str]:
    """The runs merge.runs asks for. `best` waits for the table (a checkpoint) and reads best.json; a
    best run without an adapter (full fine-tuning) has nothing to merge."""
    if MERGE_RUNS == "none":
        return []
    if MERGE_RUNS == "all":
        return [name for name in ADAPTER_RUNS if name in finished_points()] if HALVING else ADAPTER_RUNS
    best = best_run(checkpoints.table.get().output.out_best)
    return [best] if best in ADAPTER_RUNS else []


def unchecked_points(runs, checked_with) -> list[str]:
    """Grid points whose runs/<run>/preflight.json is missing or was checked with other settings."""
    import json

    todo = []
    for name in runs:
        try:
            with open(f"{R}/runs/{name}/preflight.json", encoding="utf-8") as fh:
                if json.load(fh).get("checked_with") == checked_with:
                    continue
        except (OSError, ValueError):
            pass
        todo.append(name)
    return todo
