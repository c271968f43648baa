import pytest
import yaml

from helpers import REPO
from loraflow.config import ConfigError, expand_grid, run_name, validate_config


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid_and_filled():
    cfg = validate_config(default_config())
    assert cfg["train"]["grad_accum"] == 1
    assert cfg["base_model"]["revision"] is None  # filled from the schema default


def test_empty_config_gets_every_default():
    cfg = validate_config({})
    assert cfg["grid"] == {
        "r": [8],
        "lora_alpha": [16],
        "target_modules": ["qv"],
        "seeds": [],
        "method": ["lora"],
        "learning_rate": [],
    }
    assert cfg["split"] == {"train": 0.8, "val": 0.1, "test": 0.1}


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda c: c["train"].update(learnig_rate=0.1), "unknown config key train.learnig_rate"),
        (lambda c: c.update(sed=1), "unknown config key sed"),
        (lambda c: c["train"].update(batch_size="8"), "config key train.batch_size"),
        (lambda c: c["grid"].update(r=[]), "config key grid.r"),
        (lambda c: c["grid"].update(r=[0]), "config key grid.r.0"),
        (lambda c: c["grid"].update(lora_alpha=[-1]), "config key grid.lora_alpha.0"),
        (lambda c: c["split"].update(train=0.7), "split: train + val + test must sum to 1"),
        (lambda c: c["train"].update(lora_dropout=1.0), "config key train.lora_dropout"),
        (lambda c: c["grid"].update(target_modules=["qkv"]), "unknown preset 'qkv'"),
        (lambda c: c["data"].update(path="/nonexistent/data.jsonl"), "config key data.path"),
        (lambda c: c["base_model"].update(source="local", path=None), "config key base_model.path"),
        (lambda c: c.update(results_dir="../elsewhere"), "config key results_dir"),
        (lambda c: c["grid"].update(method=["qlora4"]), "config key grid.method.0"),
        (lambda c: c["grid"].update(method=["lora", "lora"]), "config key grid.method: duplicate"),
    ],
)
def test_bad_config_names_the_key(mutate, fragment):
    cfg = default_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert fragment in str(err.value)


def test_grid_expansion_and_readable_run_names():
    cfg = validate_config(
        {"grid": {"r": [4, 8], "lora_alpha": [16, 0.5], "target_modules": ["qv", ["q_proj", "k_proj"]]}}
    )
    runs = expand_grid(cfg)
    assert len(runs) == 8
    assert "r8_a16_qv" in runs and "r4_a0.5_q-k" in runs
    assert runs["r8_a16_qv"] == {
        "point": "r8_a16_qv",
        "method": "lora",
        "r": 8,
        "lora_alpha": 16.0,
        "targets": "qv",
        "target_modules": "qv",
        "learning_rate": 0.001,
        "seed": 42,
    }
    assert runs["r4_a0.5_q-k"]["target_modules"] == ["q_proj", "k_proj"]
    assert run_name(8, 16.0, "all-linear") == "r8_a16_all-linear"


def test_adding_a_grid_value_keeps_existing_names():
    cfg = validate_config({"grid": {"r": [4, 8]}})
    more = validate_config({"grid": {"r": [4, 8, 16]}})
    assert set(expand_grid(cfg)) < set(expand_grid(more))
    assert set(expand_grid(more)) - set(expand_grid(cfg)) == {"r16_a16_qv"}


def test_duplicate_grid_values_are_rejected():
    with pytest.raises(ConfigError, match="grid.r"):
        validate_config({"grid": {"r": [8, 8]}})


def test_seeds_axis_keeps_the_default_seed_name():
    runs = expand_grid(validate_config({"seed": 42, "grid": {"r": [8], "seeds": [42, 1, 2]}}))
    assert list(runs) == ["r8_a16_qv", "r8_a16_qv_s1", "r8_a16_qv_s2"]
    assert {v["point"] for v in runs.values()} == {"r8_a16_qv"}
    assert [v["seed"] for v in runs.values()] == [42, 1, 2]


def test_method_axis_names_runs_and_full_is_one_run_per_seed():
    cfg = validate_config(
        {
            "grid": {
                "r": [4, 8],
                "lora_alpha": [16],
                "method": ["lora", "dora", "qlora", "lora_8bit", "rslora", "full"],
                "seeds": [42, 7],
            }
        }
    )
    runs = expand_grid(cfg)
    assert {
        "r4_a16_qv",
        "r4_a16_qv_dora",
        "r8_a16_qv_qlora",
        "r8_a16_qv_8bit",
        "r8_a16_qv_rslora_s7",
        "full",
        "full_s7",
    } <= set(runs)
    assert len(runs) == 2 * (5 * 2 + 1)  # seeds x (5 LoRA methods x 2 ranks + one full run)
    assert runs["full"] == {
        "point": "full",
        "method": "full",
        "r": None,
        "lora_alpha": None,
        "targets": "all",
        "target_modules": None,
        "learning_rate": 5e-05,
        "seed": 42,
    }
    assert runs["r8_a16_qv_qlora"]["method"] == "qlora" and runs["r8_a16_qv_qlora"]["point"] == "r8_a16_qv_qlora"


@pytest.mark.parametrize(
    "entry, fragment",
    [
        (
            {"name": "mix", "adapters": ["r4_a16_qv", "r8_a16_qv"], "weights": [1.0]},
            "combine.0 (mix).weights: 1 weights for 2 adapters",
        ),
        (
            {"name": "mix", "adapters": ["r4_a16_qv", "r9_a16_qv"], "weights": [1, 1]},
            "combine.0 (mix).adapters: 'r9_a16_qv' is not a run",
        ),
        (
            {"name": "r4_a16_qv", "adapters": ["r4_a16_qv", "r8_a16_qv"], "weights": [1, 1]},
            "is already the name of a run",
        ),
        (
            {"name": "mix", "adapters": ["r4_a16_qv", "r8_a16_qv"], "weights": [1, 1], "combination_type": "ties"},
            "needs a density",
        ),
        ({"name": "mix", "adapters": ["r4_a16_qv", "full"], "weights": [1, 1]}, "'full' is a full fine-tuning run"),
        ({"name": "mix", "adapters": ["r4_a16_qv"], "weights": [1]}, "config key combine.0.adapters"),
    ],
)
def test_bad_combination_names_the_key(entry, fragment):
    with pytest.raises(ConfigError) as err:
        validate_config({"grid": {"r": [4, 8], "method": ["lora", "full"]}, "combine": [entry]})
    assert fragment in str(err.value)


def test_combinations_become_evaluable_runs():
    from loraflow.config import expand_combinations

    cfg = validate_config(
        {
            "grid": {"r": [4, 8]},
            "combine": [{"name": "mix", "adapters": ["r4_a16_qv", "r8_a16_qv"], "weights": [0.5, 0.5]}],
        }
    )
    combos = expand_combinations(cfg)
    assert combos["mix"]["combination_type"] == "cat" and combos["mix"]["method"] == "combine"
    assert combos["mix"]["targets"] == "r4_a16_qv+r8_a16_qv" and combos["mix"]["density"] is None


def test_a_stage_gets_named_settings_from_hp_and_runtime_keys_from_the_config():
    """runner.stage_kwargs: params `hp` (result-affecting settings, one dict so Snakemake sees names) is
    spread into keyword arguments; params `runtime` names config keys read when the job runs."""
    from types import SimpleNamespace

    from loraflow.runner import stage_kwargs

    class Named(dict):  # the items() of Snakemake's Namedlist
        pass

    smk = SimpleNamespace(
        input=Named(model_dir="m"),
        output=Named(out_stats="s.json"),
        params=Named(
            hp={"r": 4, "warmup_steps": 0},
            runtime={"threads": "torch_threads", "checkpoint_every": "train.checkpoint_every"},
            checkpoint_dir="c",
        ),
        config={"torch_threads": 2, "train": {"checkpoint_every": 7}},
    )
    assert stage_kwargs(smk) == {
        "model_dir": "m",
        "out_stats": "s.json",
        "r": 4,
        "warmup_steps": 0,
        "checkpoint_dir": "c",
        "threads": 2,
        "checkpoint_every": 7,
    }


def test_users_data_gets_no_system_prompt_unless_asked():
    from loraflow.config import BUILTIN_SYSTEM_PROMPT, system_prompt

    assert system_prompt({"path": "builtin", "system_prompt": None}) == BUILTIN_SYSTEM_PROMPT
    assert (
        system_prompt({"path": "my.jsonl", "system_prompt": None}) == ""
    )  # no row gains text the user did not ask for
    assert system_prompt({"path": "my.jsonl", "system_prompt": "Be brief."}) == "Be brief."
    assert system_prompt({"path": "builtin", "system_prompt": ""}) == ""
