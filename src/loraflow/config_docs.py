"""config/README.md, generated from the config schema (every key with its type, default and meaning)
and from loraflow.model.targets (the target-module presets, so the docs list exactly what the code takes).

    python -m loraflow.config_docs            # rewrite config/README.md
    python -m loraflow.config_docs --check    # exit 1 if it is out of date (tests/test_config_docs.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loraflow.config import SCHEMA_PATH, load_schema

REPO = Path(__file__).resolve().parents[2]
SCHEMA = SCHEMA_PATH
OUT = REPO / "config" / "README.md"

HEADER = """# Configuring loraflow

<!-- Generated from workflow/schemas/config.schema.yaml by `python -m loraflow.config_docs`; do not edit. -->

The workflow reads `config.yaml` from the directory it runs in (`snakemake --configfile F` reads
another). Every key below is optional: a missing key takes its default, and an unknown key is an
error, so a typo never falls back to a default silently. `.test/config/config.yaml` is a short sweep
that runs every stage in minutes on a CPU.

To use loraflow as a [Snakemake module](https://snakemake.readthedocs.io/en/stable/snakefiles/modularization.html#modules)
from another project, with that project's own `config.yaml` (these keys):

```python
configfile: "config.yaml"


module loraflow:
    snakefile: github("<owner>/loraflow", path="workflow/Snakefile", tag="<version>")  # or a local path
    config: config


use rule * from loraflow
```

Keys whose change cannot alter a result (for example `torch_threads`, `train.checkpoint_every`)
rerun nothing when changed; every other key reruns exactly the jobs it affects.
"""


def _type(spec: dict) -> str:
    if "enum" in spec:
        return " \\| ".join(f"`{json.dumps(v) if not isinstance(v, str) else v}`" for v in spec["enum"])
    if "oneOf" in spec or "anyOf" in spec:
        return " or ".join(_type(s) for s in spec.get("oneOf", spec.get("anyOf", [])))
    kind = spec.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    if "array" in kinds and "items" in spec:
        return f"list of {_type(spec['items'])}"
    bounds = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in spec:
            bounds.append(f"{sign} {spec[key]}")
    return " or ".join(k for k in kinds if k) + (f" ({', '.join(bounds)})" if bounds else "")


def _default(spec: dict) -> str:
    if "default" not in spec or spec.get("type") == "object" and spec["default"] == {}:
        return ""
    return f"`{json.dumps(spec['default'], ensure_ascii=False)}`"


def _text(spec: dict) -> str:
    return " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")


def _ref_key(spec: dict) -> str:
    """`clean.dedup` for {"$ref": "#/properties/clean/properties/dedup"}."""
    return ".".join(p for p in spec["$ref"].removeprefix("#/").split("/") if p != "properties")


def _resolve(spec: dict, schema: dict) -> dict:
    target = schema
    for part in spec["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return target


def _rows(props: dict, prefix: str, schema: dict | None = None) -> list[str]:
    rows = []
    for name, spec in props.items():
        key = f"{prefix}{name}"
        if "$ref" in spec and schema is not None:
            rows.append(f"| `{key}` | {_type(_resolve(spec, schema))} | | as `{_ref_key(spec)}` |")
        elif spec.get("type") == "object" and "properties" in spec:
            if _text(spec):
                default = _default(spec) if spec.get("default") else ""
                rows.append(f"| `{key}` | section | {default} | {_text(spec)} |")
            rows.extend(_rows(spec["properties"], key + ".", schema))
        else:
            rows.append(f"| `{key}` | {_type(spec)} | {_default(spec)} | {_text(spec)} |")
    return rows


# Column heads of the preset table, one per family of loraflow.model.targets.FAMILY_PRESETS.
FAMILY_LABELS = {
    "llama": "Llama / Qwen / Mistral / Gemma (and unknown types)",
    "gpt2": "GPT-2",
    "bloom": "BLOOM",
    "bert": "BERT / RoBERTa / MiniLM",
}


def presets_table() -> str:
    """The target-module presets as the code resolves them, one row per preset, one column per family."""
    from loraflow.model.targets import FAMILY_PRESETS, PRESET_NAMES

    families = list(FAMILY_PRESETS)
    head = (
        "| preset | "
        + " | ".join(FAMILY_LABELS.get(f, f) for f in families)
        + " |\n|---|"
        + "---|" * len(families)
        + "\n"
    )

    def cell(family: str, preset: str) -> str:
        if preset == "all-linear":
            return "every linear layer but the output head (peft `all-linear`)"
        names = FAMILY_PRESETS[family][preset]
        text = ", ".join(names) if isinstance(names, list) else f"regex `{names}`"
        return text.replace("|", "\\|")

    rows = [f"| `{p}` | " + " | ".join(cell(f, p) for f in families) + " |" for p in PRESET_NAMES]
    return (
        "## Target-module presets\n\n`grid.target_modules` takes these presets (or an explicit list of module "
        "names); each is resolved for the model's family when the job sees the model:\n\n"
        + head
        + "\n".join(rows)
        + "\n"
    )


def render(schema_path: Path = SCHEMA) -> str:
    schema = load_schema(schema_path)
    parts = [HEADER]
    top = {k: v for k, v in schema["properties"].items() if not (v.get("type") == "object" and "properties" in v)}
    if top:
        parts.append(
            "## Top level\n\n| key | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(_rows(top, "")) + "\n"
        )
    for name, spec in schema["properties"].items():
        if name in top:
            continue
        intro = f"{_text(spec)}\n\n" if _text(spec) else ""
        parts.append(
            f"## `{name}`\n\n{intro}| key | type | default | meaning |\n|---|---|---|---|\n"
            + "\n".join(_rows(spec["properties"], name + ".", schema))
            + "\n"
        )
    parts.append(presets_table())
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if config/README.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python -m loraflow.config_docs", file=sys.stderr)
            return 1
        return 0
    from loraflow.io import atomic_path

    OUT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(str(OUT)) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
