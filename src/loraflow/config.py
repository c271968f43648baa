"""Configuration: schema validation with defaults, semantic checks, grid expansion and run names.

Imported by the Snakefile at parse time, so it must stay light (no torch, no transformers).
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from loraflow.config_schema import coerce_yaml_numbers, describe_error
from loraflow.model.targets import PRESET_NAMES

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
# data.system_prompt null with data.path builtin: the built-in set's own prompt (its answers are written for it).
BUILTIN_SYSTEM_PROMPT = "You are the customer-service assistant of Lumora Home. Answer briefly and exactly."


def system_prompt(data: dict) -> str:
    """The system prompt put in front of conversations without one (config `data`): data.system_prompt,
    or when it is null the built-in set's own prompt for data.path builtin and none for the user's data."""
    if data.get("system_prompt") is not None:
        return data["system_prompt"]
    return BUILTIN_SYSTEM_PROMPT if data.get("path", "builtin") == "builtin" else ""


# Training methods (the grid's `method` axis) and the suffix each adds to a run name.
METHODS = {
    "lora": "",  # plain LoRA
    "dora": "_dora",  # weight-decomposed LoRA (peft use_dora)
    "rslora": "_rslora",  # rank-stabilised scaling alpha/sqrt(r) (peft use_rslora)
    "qlora": "_qlora",  # 4-bit NF4 base, double quantisation, paged AdamW 8-bit
    "lora_8bit": "_8bit",  # 8-bit base (load_in_8bit)
    "full": "",  # full fine-tuning reference: every weight trained, no adapter (run `full`)
}
QUANTIZED_METHODS = ("qlora", "lora_8bit")


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def load_yaml(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


@functools.lru_cache(maxsize=4)
def _parsed_schema(path: str, mtime_ns: int) -> dict:
    # libyaml's safe loader (same tags and resolution as yaml.SafeLoader) where PyYAML has it: the schema is
    # read whenever the workflow is parsed, which on a cluster is once per job
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema as a fresh dict, parsed once per process (and again if the file changes)."""
    return copy.deepcopy(_parsed_schema(str(path), Path(path).stat().st_mtime_ns))


def _with_defaults(validator_class):
    """A jsonschema validator that fills in `default` values while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH, notes: list[str] | None = None) -> dict:
    """Validate `config` in place against the schema, fill defaults, run semantic checks.

    Numbers YAML 1.1 reads as strings ('1e-4') become numbers where the schema wants one; `notes`
    (if given) gets one line per such key. Raises ConfigError, one line naming the key, the bad value
    and what is allowed, on the first problem found.
    """
    schema = load_schema(schema_path)
    coerced: dict[str, str] = {}
    coerce_yaml_numbers(config, schema, schema, notes=coerced)
    validator = _DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(describe_error(errors[0], coerced))
    check_semantics(config)
    if notes is not None:
        notes += [f"config key {key}: {what}" for key, what in coerced.items()]
    return config


def clean_settings(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """The clean.* settings the clean stage gets: `clean`, and for data.path builtin the preset
    data.builtin_clean in place of every clean.* key left at its schema default."""
    settings = dict(config["clean"])
    if config["data"]["path"] != "builtin":
        return settings
    defaults = {k: v.get("default") for k, v in load_schema(schema_path)["properties"]["clean"]["properties"].items()}
    for key, value in (config["data"].get("builtin_clean") or {}).items():
        if settings.get(key, defaults.get(key)) == defaults.get(key):
            settings[key] = value
    return settings


def missing_file(path: str) -> str:
    """Why `path` is not a data file, in words: a directory, or nothing there."""
    if Path(path).is_dir():
        return f"{path!r} is a directory; name one data file in it"
    return f"data file {path!r} does not exist"


def check_semantics(config: dict) -> None:
    """Checks a JSON schema cannot express."""
    split = config["split"]
    total = split["train"] + split["val"] + split["test"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"config key split: train + val + test must sum to 1, got "
            f"{split['train']} + {split['val']} + {split['test']} = {total:g}"
        )
    for axis in ("r", "lora_alpha", "target_modules", "seeds", "method", "learning_rate"):
        values = config["grid"][axis]
        if values == "auto":  # grid.learning_rate: auto, a ladder without duplicates
            continue
        if len(values) != len({_freeze(v) for v in values}):
            raise ConfigError(f"config key grid.{axis}: duplicate values {values}")
    for t in config["grid"]["target_modules"]:
        if isinstance(t, str) and t not in PRESET_NAMES:
            raise ConfigError(
                f"config key grid.target_modules: unknown preset {t!r}; use one of "
                f"{', '.join(PRESET_NAMES)} or an explicit list of module names"
            )
    bm = config["base_model"]
    if bm["source"] in ("local", "hub") and not bm["path"]:
        raise ConfigError(f"config key base_model.path: required when base_model.source is {bm['source']!r}")
    if bm["source"] == "local" and not Path(bm["path"]).is_dir():
        raise ConfigError(f"config key base_model.path: {bm['path']!r} is not a directory")
    data_path = config["data"]["path"]
    if data_path != "builtin" and not data_path.startswith("hf:") and not Path(data_path).is_file():
        raise ConfigError(f"config key data.path: {missing_file(data_path)}")
    check_combinations(config)
    table = config["table"]  # a choice by what a run kept needs the retention set to measure it
    if (
        config["task"] == "causal_lm"
        and (table["retention_floor"] or table["select"] == "pareto")
        and not config["evaluate"]["retention_items"]
    ):
        key = "table.retention_floor" if table["retention_floor"] else "table.select"
        raise ConfigError(
            f"config key {key}: choosing by retention needs the retention set; set evaluate.retention_items above 0"
        )
    results = Path(config["results_dir"])
    if ".." in results.parts:
        raise ConfigError(f"config key results_dir: {config['results_dir']!r} must not contain '..'")


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def targets_label(targets: str | list[str]) -> str:
    """Short name of a target-module choice: the preset name, or module names joined by '-'."""
    if isinstance(targets, str):
        return targets
    return "-".join(t.removesuffix("_proj") for t in targets)


def run_name(
    r: int,
    alpha: float,
    targets: str | list[str],
    seed: int | None = None,
    method: str = "lora",
    learning_rate: float | None = None,
) -> str:
    """`r8_a16_qv`, `r8_a16_qv_dora`, `full`; a run with a learning rate other than `train.learning_rate`
    gets a suffix (`r8_a16_qv_lr0.0003`), and one with a seed other than the config's `seed` another
    (`r8_a16_qv_s1`), so the names of the default runs never change."""
    name = "full" if method == "full" else f"r{r}_a{_fmt_number(alpha)}_{targets_label(targets)}{METHODS[method]}"
    if learning_rate is not None:
        name += f"_lr{learning_rate:g}"
    return name if seed is None else f"{name}_s{seed}"


def expand_grid(config: dict) -> dict[str, dict]:
    """All grid points as {run name: hyperparameters}, in a stable order.

    `point` names the grid point without its seed, so runs that differ only by seed can be averaged.
    `target_modules` stays a preset name or a list: each job resolves it for the model's family.
    `learning_rate` is the run's own (the `grid.learning_rate` axis, else `train.learning_rate`;
    `auto`: the ladder of loraflow.search.ladder, centred on 10 x `train.learning_rate_full`).
    Method `full` trains every weight, so r, alpha, targets and the learning-rate axis do not apply:
    one run per seed, at `train.learning_rate_full`."""
    grid = config["grid"]
    seeds = grid["seeds"] or [config["seed"]]
    default_lr = config.get("train", {}).get("learning_rate", 0.001)
    rates = grid.get("learning_rate") or [default_lr]
    if rates == "auto":  # a ladder around the published LoRA rule (loraflow.search.ladder)
        from loraflow.search.ladder import auto_rates

        rates = auto_rates(float(config.get("train", {}).get("learning_rate_full", 5e-5)))
    runs: dict[str, dict] = {}
    for method, r, alpha, targets, lr, seed in itertools.product(
        grid["method"], grid["r"], grid["lora_alpha"], grid["target_modules"], rates, seeds
    ):
        full = method == "full"
        lr_suffix = None if full or math.isclose(lr, default_lr, rel_tol=1e-12) else lr
        name = run_name(r, alpha, targets, None if seed == config["seed"] else seed, method, lr_suffix)
        if name in runs:
            continue
        runs[name] = {
            "point": run_name(r, alpha, targets, method=method, learning_rate=lr_suffix),
            "method": method,
            "r": None if full else int(r),
            "lora_alpha": None if full else float(alpha),
            "targets": "all" if full else targets_label(targets),
            "target_modules": None if full else (targets if isinstance(targets, str) else list(targets)),
            "learning_rate": float(config.get("train", {}).get("learning_rate_full", 5e-5)) if full else float(lr),
            "seed": int(seed),
        }
    return runs


# peft add_weighted_adapter combination types; those that need `density` (fraction of weights kept).
COMBINATION_TYPES = (
    "linear",
    "cat",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
NEEDS_DENSITY = (
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)


def check_combinations(config: dict) -> None:
    """Each `combine` entry names trained LoRA runs of the grid, one weight per adapter, a density
    when its combination type needs one, and a name of its own."""
    entries = config.get("combine") or []
    if not entries:
        return
    runs = expand_grid(config)
    seen: set[str] = set()
    for i, c in enumerate(entries):
        key = f"combine.{i} ({c['name']})"
        if c["name"] in runs or c["name"] in seen:
            raise ConfigError(f"config key {key}.name: {c['name']!r} is already the name of a run")
        seen.add(c["name"])
        for a in c["adapters"]:
            if a not in runs:
                raise ConfigError(
                    f"config key {key}.adapters: {a!r} is not a run of the grid (runs: {', '.join(runs)})"
                )
            if runs[a]["method"] == "full":
                raise ConfigError(f"config key {key}.adapters: {a!r} is a full fine-tuning run, it has no adapter")
        if len(set(c["adapters"])) != len(c["adapters"]):
            raise ConfigError(f"config key {key}.adapters: an adapter is listed twice")
        if len(c["weights"]) != len(c["adapters"]):
            raise ConfigError(
                f"config key {key}.weights: {len(c['weights'])} weights for {len(c['adapters'])} adapters"
            )
        if c["combination_type"] in NEEDS_DENSITY and c.get("density") is None:
            raise ConfigError(
                f"config key {key}.density: combination_type {c['combination_type']} needs a density in (0, 1]"
            )


def expand_combinations(config: dict) -> dict[str, dict]:
    """Weighted combinations of trained adapters ({name: spec}); each is evaluated like a run."""
    return {
        c["name"]: {
            "point": c["name"],
            "method": "combine",
            "r": None,
            "lora_alpha": None,
            "targets": "+".join(c["adapters"]),
            "target_modules": None,
            "seed": None,
            "adapters": list(c["adapters"]),
            "weights": [float(w) for w in c["weights"]],
            "combination_type": c["combination_type"],
            "density": c.get("density"),
        }
        for c in config.get("combine") or []
    }
