"""The config against its schema, in the user's words: strings YAML 1.1 leaves unread ('1e-4') read as the
numbers the schema wants, and each schema error told in one line that names the key, the bad value and
what is allowed.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import jsonschema


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed(schema: dict) -> str:
    """What a schema allows, in words: its values, its type and bounds."""
    if "enum" in schema:
        return "one of " + ", ".join(_short(v) for v in schema["enum"])
    if "const" in schema:
        return _short(schema["const"])
    if "$ref" in schema or not schema:
        return ""
    branches = schema.get("oneOf") or schema.get("anyOf")
    if branches:
        return " or ".join(filter(None, (_allowed(b) for b in branches)))
    kinds = schema.get("type", [])
    words = " or ".join(kinds if isinstance(kinds, list) else [kinds])
    if words == "array" and isinstance(schema.get("items"), dict):
        words = f"a list of {_allowed(schema['items'])}"
    bounds = [
        f"{sign} {schema[k]}"
        for k, sign in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
            ("minItems", "items >="),
        )
        if k in schema
    ]
    return (words + (f" ({', '.join(bounds)})" if bounds else "")).strip()


def describe_error(error: jsonschema.ValidationError, coerced: dict[str, str]) -> str:
    """One line: the key, the bad value, what is allowed (and for a typo the closest known key)."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        # the branch that fits the value's kind (a list for a list), not the branch of another kind
        inner = [e for e in error.context if e.validator not in ("type", "const") or e.relative_path]
        if not inner:
            return (
                f"config key {_key_path(error)}: {_short(error.instance)} is not allowed (allowed: "
                f"{_allowed(error.schema)})"
            )
        error = jsonschema.exceptions.best_match(inner)
    where = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(allowed))
        parts = []
        for k in unexpected:
            close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
            parts.append(
                (f"{where}.{k}" if where != "<top level>" else k) + (f" (did you mean {close[0]}?)" if close else "")
            )
        return f"unknown config key {', '.join(parts)}; allowed here: {', '.join(allowed)}"
    allowed_text = _allowed(error.schema)
    line = f"config key {where}: {_short(error.instance)} is not allowed"
    if (
        error.validator in ("enum", "type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        and allowed_text
    ):
        line += f" (allowed: {allowed_text})"
    else:
        line += f" ({' '.join(error.message.split())[:160]})"
    if isinstance(error.instance, str) and error.validator == "type":
        line += "; it is a string here (write a number without quotes)"
    if where in coerced:
        line += f"; {coerced[where]}"
    elif isinstance(error.instance, str) and _YAML11_NUMBER.match(error.instance.strip()):
        line += f"; {_yaml11_note(error.instance)}"
    return line


# Numbers that YAML 1.2 reads as numbers and YAML 1.1 (PyYAML, so Snakemake) as strings: an exponent
# without a dot or without a sign ('1e-4', '5E3', '1.0e4').
_YAML11_NUMBER = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")


def _yaml11_note(text: str) -> str:
    return f"YAML reads {text} as a string (YAML 1.1 wants a dot and a signed exponent: {float(text):.1e})"


def _resolve(schema: dict, root: dict) -> dict:
    """A local `$ref` ("#/properties/clean/properties/dedup") replaced by what it points at."""
    while isinstance(schema, dict) and "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _wants_number(schema: dict) -> str:
    """'integer', 'number' or '' for what a schema wants."""
    kinds = schema.get("type", [])
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds:
        return ""
    return "number" if "number" in kinds else "integer" if "integer" in kinds else ""


def coerce_yaml_numbers(value: Any, schema: dict, root: dict, path: str = "", notes: dict | None = None) -> Any:
    """`value` with the strings YAML 1.1 leaves unread ('1e-4') turned into numbers wherever the schema
    wants a number (an integer only when the number is whole); nothing else changes. `notes` gets
    {key: what was read}."""
    notes = {} if notes is None else notes
    schema = _resolve(schema, root)
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        for k, v in value.items():
            if k in schema["properties"]:
                value[k] = coerce_yaml_numbers(v, schema["properties"][k], root, f"{path}.{k}" if path else k, notes)
        return value
    branches = schema.get("oneOf") or schema.get("anyOf") or []
    for branch in branches:  # a list (or mapping) under oneOf: the branch that describes one
        branch = _resolve(branch, root)
        if (isinstance(value, list) and "items" in branch) or (isinstance(value, dict) and "properties" in branch):
            return coerce_yaml_numbers(value, branch, root, path, notes)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce_yaml_numbers(v, schema["items"], root, f"{path}.{i}", notes) for i, v in enumerate(value)]
    if isinstance(value, str) and _YAML11_NUMBER.match(value.strip()):
        want = _wants_number(schema) or next(
            filter(None, (_wants_number(b) for b in schema.get("oneOf", schema.get("anyOf", [])))), ""
        )
        number = float(value)
        if want == "number" or (want == "integer" and number.is_integer()):
            notes[path] = f"{_yaml11_note(value)}; read as the number {number:g}"
            return int(number) if want == "integer" else number
    return value
