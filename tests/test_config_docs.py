"""config/README.md documents every configuration key and the target-module presets, generated from the
schema and from the code."""

import re

import yaml

from loraflow import config_docs
from loraflow.model.targets import PRESET_NAMES


def test_config_readme_is_generated_from_the_current_schema():
    assert config_docs.main(["--check"]) == 0, "run: python -m loraflow.config_docs"


def test_every_key_has_a_description():
    def leaves(props, prefix=""):
        for name, spec in props.items():
            if spec.get("type") == "object" and "properties" in spec:
                yield from leaves(spec["properties"], f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", spec

    schema = yaml.safe_load(config_docs.SCHEMA.read_text(encoding="utf-8"))
    # a key that refers to another ($ref: data.builtin_clean.* -> clean.*) is described there
    undocumented = [
        key
        for key, spec in leaves(schema["properties"])
        if "$ref" not in spec and not str(spec.get("description", "")).strip()
    ]
    assert undocumented == []
    text = config_docs.render()
    for key, _ in leaves(schema["properties"]):
        assert f"| `{key}` |" in text


def test_documented_target_presets_are_the_codes_presets():
    text = config_docs.render()
    table = text[text.index("## Target-module presets") :]
    assert re.findall(r"^\| `([^`]+)` \|", table, re.M) == list(PRESET_NAMES)
    schema = yaml.safe_load(config_docs.SCHEMA.read_text(encoding="utf-8"))
    described = schema["properties"]["grid"]["properties"]["target_modules"]["description"]
    listed = re.search(r"a preset \(([^;)]+)", described).group(1)
    assert [p.strip() for p in listed.split(",")] == list(PRESET_NAMES)
