"""Which test rows belong together, for the clustered bootstrap (`table.cluster_by`).

Rows about one thing (several questions on one product, one fact asked in other words) succeed or fail
together; resampling them one by one makes intervals too narrow. A group is the value of a row field
(at the top of the split row or in its `meta`, where the data stages keep the source's extra fields):

- `auto` (default): `group` when the rows carry one (a user's own group id); for rows that carry
  `facts` (the built-in data) their reference answer: rows with the same answer state one fact of one
  product, asked in other words, and are right or wrong together. Rows carrying neither: no clusters
  (row-wise bootstrap).
- `none`: row-wise.
- any other name: that field. A row without it is a group of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from loraflow.io import read_jsonl


def field(row: dict, key: str):
    """A row's `key`, at its top level or in its meta (None when absent)."""
    value = row.get(key)
    if value is None and isinstance(row.get("meta"), dict):
        value = row["meta"].get(key)
    return value


def group_key(rows: list[dict], cluster_by: str) -> str | None:
    """The field that groups `rows` (None: row-wise)."""
    if cluster_by == "none":
        return None
    if cluster_by != "auto":
        return cluster_by
    if any(field(r, "group") is not None for r in rows):
        return "group"
    return "reference" if any(field(r, "facts") is not None for r in rows) else None


def row_groups(rows_path: str | None, cluster_by: str = "auto") -> tuple[dict[str, str], str | None]:
    """({row id: group}, the field used) for the rows of a split file; ({}, None) for row-wise."""
    if not rows_path or not Path(rows_path).is_file():
        return {}, None
    rows = read_jsonl(rows_path)
    key = group_key(rows, cluster_by)
    if key is None:
        return {}, None
    groups = {}
    for r in rows:
        value = field(r, key)
        groups[str(r["id"])] = (
            f"row:{r['id']}" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)
        )
    return groups, key
