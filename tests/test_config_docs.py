"""config/README.md documents every configuration key and is generated from the schema."""

import yaml

from loraflow import config_docs


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
    undocumented = [key for key, spec in leaves(schema["properties"]) if not str(spec.get("description", "")).strip()]
    assert undocumented == []
    text = config_docs.render()
    for key, _ in leaves(schema["properties"]):
        assert f"| `{key}` |" in text

