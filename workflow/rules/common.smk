# Helpers shared by the rules. No heavy imports here: this file is parsed on every invocation.

import re


wildcard_constraints:
    run="|".join(re.escape(name) for name in sorted(ALL_RUNS)),


DATA = config["data"]
HUB_DATA = DATA["path"].startswith("hf:")


def clean_inputs(wildcards):
    """The raw data file (generated, or the user's) and the base model's tokenizer."""
    inputs = {"model_dir": f"{R}/base_model"}
    if not HUB_DATA:
        inputs["data_path"] = f"{R}/data/raw.jsonl" if DATA["path"] == "builtin" else DATA["path"]
    return inputs

# Runs with an adapter (to merge and to analyse); a fully fine-tuned model has none.
ADAPTER_RUNS = [name for name, hp in ALL_RUNS.items() if hp["method"] != "full"]
# The run wildcard of the rules that only trained runs have (not the combinations).
TRAINED_RUN = "|".join(re.escape(name) for name in sorted(RUNS))

# The deploy precision of evaluation, merge and combine (evaluate.precision; `train` follows train.precision).
EVAL_PRECISION = config["train"]["precision"] if config["evaluate"]["precision"] == "train" else config["evaluate"]["precision"]
