"""runner.bind: flat rule params become the settings dataclasses a stage function's signature names."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from loraflow.binding import bind, build, field_names


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    steps: int = 10


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    tags: tuple = ()


def stage(out_path: str, settings: Outer, extra: Inner | None = None) -> None:  # pragma: no cover - bound only
    raise AssertionError


def test_field_names_spell_out_nested_settings():
    assert field_names(Outer) == ["name", "lr", "steps", "tags"]


def test_build_takes_its_keys_and_keeps_defaults():
    pool = {"name": "r8", "lr": 0.5, "other": 1}
    got = build(Outer, pool)
    assert got == Outer(name="r8", inner=Inner(lr=0.5, steps=10))
    assert pool == {"other": 1}


def test_bind_groups_flat_params_by_the_signature():
    kwargs = bind(stage, {"out_path": "a.json", "name": "r8", "steps": 3})
    assert kwargs["out_path"] == "a.json"
    assert kwargs["settings"] == Outer(name="r8", inner=Inner(steps=3))
    # the second dataclass finds its keys already taken: it is built from defaults
    assert kwargs["extra"] == Inner()


def test_bind_passes_a_ready_dataclass_through():
    ready = Outer(name="x")
    assert bind(stage, {"out_path": "p", "settings": ready})["settings"] is ready


def test_bind_rejects_a_setting_no_parameter_takes():
    with pytest.raises(TypeError, match="learning_rat"):
        bind(stage, {"out_path": "p", "name": "r8", "learning_rat": 0.1})
