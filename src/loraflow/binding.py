"""Settings as types: a stage function takes paths and a few frozen dataclasses of settings.

A rule passes its settings flat (params `hp` and `runtime`, see runner.stage_kwargs), because Snakemake
compares flat params to decide on reruns. `bind` groups that flat pool into the dataclasses the stage
function's signature names, by field name, so a settings group is declared once (its dataclass) and
the rule's key list, the function's signature and the tests all read the same fields.

This module imports nothing heavy: the workflow reads settings fields when it parses.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Callable


def field_names(cls: type) -> list[str]:
    """The flat setting names a settings dataclass takes (nested settings dataclasses spelled out)."""
    names: list[str] = []
    for f in dataclasses.fields(cls):
        sub = _dataclass_type(_hints(cls).get(f.name))
        names.extend(field_names(sub) if sub else [f.name])
    return names


def build(cls: type, pool: dict[str, Any]) -> Any:
    """An instance of the settings dataclass `cls` from the flat `pool`; the keys it takes are removed
    from `pool`, and fields missing from it keep their defaults."""
    hints, values = _hints(cls), {}
    for f in dataclasses.fields(cls):
        sub = _dataclass_type(hints.get(f.name))
        if sub is not None and f.name not in pool:
            values[f.name] = build(sub, pool)
        elif f.name in pool:
            values[f.name] = pool.pop(f.name)
    return cls(**values)


def bind(fn: Callable, pool: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for `fn` from a flat pool of paths and settings: each parameter annotated with a
    dataclass is built from the pool (see `build`), any other parameter takes the pool's value of its
    name. A key that no parameter takes is an error, as an unexpected keyword argument would be."""
    pool = dict(pool)
    hints, kwargs = _hints(fn), {}
    params = inspect.signature(fn).parameters
    for name in params:
        if name in pool:
            kwargs[name] = pool.pop(name)
    for name in params:
        cls = _dataclass_type(hints.get(name))
        if cls is not None and name not in kwargs:
            kwargs[name] = build(cls, pool)
    if pool and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"{fn.__module__}.{fn.__qualname__} takes no settings named {', '.join(sorted(pool))}")
    kwargs.update(pool)
    return kwargs


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except (NameError, TypeError):  # an annotation that cannot be resolved here is not a settings type
        return {}


def _dataclass_type(annotation: Any) -> type | None:
    """The dataclass an annotation names (also through `X | None`), else None."""
    if annotation is None:
        return None
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = typing.get_args(annotation) if union else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None
