"""Config problems are one line naming the key, the bad value and what is allowed, in Snakemake runs too;
numbers YAML 1.1 reads as strings are numbers; the built-in data's fixers stay with the built-in data."""

import os
import subprocess
import sys

import pytest
import yaml

from helpers import REPO
from loraflow.config import SCHEMA_PATH, ConfigError, clean_settings, validate_config


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))


def error_of(config: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    return str(err.value)


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda c: c.update(sed=1), ["unknown config key sed (did you mean seed?)", "allowed here: base_model"]),
        (
            lambda c: c["train"].update(learnig_rate=0.1),
            ["unknown config key train.learnig_rate (did you mean learning_rate?)"],
        ),
        (lambda c: c["clean"].update(dedp="near"), ["clean.dedp (did you mean dedup?)"]),
        (lambda c: c["grid"].update(method=["qlora4"]), ["grid.method.0", "'qlora4'", "one of 'lora', 'dora'"]),
        (lambda c: c["train"].update(precision="bf32"), ["train.precision", "'bf32'", "one of 'auto', 'fp32', 'bf16'"]),
        (
            lambda c: c["grid"].update(learning_rate="fast"),
            ["grid.learning_rate", "'fast'", "a list of number (> 0) or 'auto'"],
        ),
        (lambda c: c["train"].update(batch_size="8"), ["train.batch_size", "'8'", "integer (>= 1)", "it is a string"]),
        (
            lambda c: c["train"].update(lora_dropout="2e0"),
            ["train.lora_dropout", "2.0", "< 1", "YAML reads 2e0 as a string"],
        ),
    ],
)
def test_a_config_error_is_one_line_with_key_value_and_what_is_allowed(mutate, fragments):
    config = default_config()
    mutate(config)
    message = error_of(config)
    assert "\n" not in message and len(message) < 600
    for fragment in fragments:
        assert fragment in message


def test_yaml_1_1_strings_that_are_numbers_are_read_as_numbers_where_the_schema_wants_one():
    config = yaml.safe_load(
        "train: {learning_rate: 1e-4, max_steps: 1e2}\ngrid: {learning_rate: [3e-4, 1.0e-3]}\n"
        "data: {system_prompt: 1e-4}\n"
    )
    assert config["train"]["learning_rate"] == "1e-4"  # what PyYAML (YAML 1.1) makes of it
    notes = []
    validate_config(config, notes=notes)
    assert config["train"]["learning_rate"] == 0.0001 and config["train"]["max_steps"] == 100
    assert isinstance(config["train"]["max_steps"], int) and config["grid"]["learning_rate"] == [0.0003, 0.001]
    assert config["data"]["system_prompt"] == "1e-4"  # a string where the schema wants one: untouched
    assert len(notes) == 3 and all("YAML reads" in n and "read as the number" in n for n in notes)
    assert notes[0].startswith("config key train.learning_rate:")


def lossless_clean_defaults() -> dict:
    schema = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
    return {k: v["default"] for k, v in schema["properties"]["clean"]["properties"].items()}


def test_a_user_config_with_only_data_path_gets_the_lossless_defaults(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    assert clean_settings(validate_config({"data": {"path": str(data)}})) == lossless_clean_defaults()
    # the repository's config.yaml with only data.path edited: the same
    edited = default_config()
    edited["data"]["path"] = str(data)
    assert clean_settings(validate_config(edited)) == lossless_clean_defaults()
    # ... and so does Snakemake's merge of config.yaml under a user's --configfile (a deep update)
    merged = default_config()
    merged["data"].update({"path": str(data)})
    assert clean_settings(validate_config(merged)) == lossless_clean_defaults()


def test_the_builtin_data_keeps_its_own_fixers_and_a_users_clean_key_wins():
    builtin = clean_settings(validate_config(default_config()))
    assert builtin == {
        **lossless_clean_defaults(),
        "min_answer_chars": 2,
        "max_chars": 4000,
        "dedup": "near",
        "strip_html": True,
        "remove_zero_width": True,
        "collapse_symbol_runs": True,
        "symbol_only": "any",
    }
    assert clean_settings(validate_config({})) == builtin  # the preset is the schema default, not config.yaml's
    config = default_config()
    config["clean"]["min_answer_chars"] = 3
    assert clean_settings(validate_config(config))["min_answer_chars"] == 3


def dry_run(tmp_path, config_text: str) -> subprocess.CompletedProcess:
    (tmp_path / "user.yaml").write_text(config_text, encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "-n",
        "--configfile",
        str(REPO / ".test" / "config" / "config.yaml"),
        str(tmp_path / "user.yaml"),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


@pytest.mark.parametrize(
    "config_text, key, fragment",
    [
        ("sed: 1\n", "sed", "did you mean seed?"),
        ("train:\n  learning_rate: 1e-4\n  lora_dropout: 2e0\n", "train.lora_dropout", "YAML reads 2e0 as a string"),
    ],
)
def test_snakemake_reports_a_config_error_in_one_line(tmp_path, config_text, key, fragment):
    proc = dry_run(tmp_path, config_text)
    assert proc.returncode != 0
    output = (proc.stdout + proc.stderr).splitlines()  # Snakemake's error report goes to stdout
    lines = [line for line in output if "invalid configuration" in line]
    assert len(lines) == 1 and key in lines[0] and fragment in lines[0]
    assert len(output) < 10  # no schema dump


def test_the_clean_log_names_the_effective_settings_in_one_line(tmp_path, tiny_model, caplog):
    import logging

    from loraflow.data.clean import clean_dataset
    from loraflow.data.settings import CleanOutputs, CleanSettings, ReaderSettings

    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "Which operator?", "answer": "&&"}\n', encoding="utf-8")
    config = validate_config({"data": {"path": str(data)}})
    settings, columns = clean_settings(config), config["data"]["columns"]
    out = {name: str(tmp_path / f"{name}.out") for name in ("out_clean", "out_rejected", "out_stats")}
    with caplog.at_level(logging.INFO, logger="loraflow"):
        stats = clean_dataset(
            str(data), str(tiny_model), CleanOutputs(**out), ReaderSettings(columns), CleanSettings(**settings)
        )
    assert stats["clean"] == 1  # an operator answer is content under the defaults
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("clean settings:")]
    assert len(lines) == 1 and "\n" not in lines[0]
    for key, value in settings.items():
        assert f"{key}={value}" in lines[0]


def test_a_directory_as_data_path_is_called_a_directory(tmp_path):
    from loraflow.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"config key data.path: '.*' is a directory; name one data file in it"):
        validate_config({"data": {"path": str(tmp_path)}})
