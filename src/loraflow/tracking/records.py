"""What a tracker mirrors of one run, read from the results files only (the files are the results).

A `RunRecord` holds a run's settings, its per-step curves from train_log.csv, its final figures from
its row of comparison.csv (with the interval bounds), train_stats.json, and the files to attach. Two
digests tell a tracker what changed since it last mirrored the run: `train_digest` (settings, curves,
train stats: a new value means the run was trained again) and `table_digest` (its table row and card:
a new best run or another bootstrap changes only these).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from loraflow.io import read_json

# comparison.csv columns that describe a run's settings rather than measure it: never metrics.
SETTING_COLUMNS = {
    "run",
    "best",
    "tied",
    "status",
    "point",
    "seed",
    "method",
    "r",
    "alpha",
    "lr",
    "alpha_over_r",
    "scale",
    "targets",
    "precision",
    "optimizer",
}
# Derived settings worth a parameter of their own (the grid point's own keys come from the workflow).
DERIVED_PARAMS = ("alpha_over_r", "scale")


@dataclass
class RunRecord:
    name: str
    params: dict[str, str]
    steps: dict[str, list[tuple[int, float]]]  # curve name -> [(step, value)], see `curve_name`
    metrics: dict[str, float]  # final figures: the table row's measurements, train_stats under stats/
    tags: dict[str, str]
    artifacts: list[Path] = field(default_factory=list)
    train_digest: str = ""
    table_digest: str = ""
    span_ms: tuple[int, int] | None = None  # when it trained (start, end), from its train log and stats


def curve_name(column: str) -> str:
    """One name per curve in both trackers: loss/train, loss/val, val/<metric>, lr, tokens_per_s."""
    if column == "train_loss":
        return "loss/train"
    if column in ("eval_loss", "val_loss"):
        return "loss/val"
    if column.startswith("val_"):
        return f"val/{column[4:]}"
    return column


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_curves(train_log: Path) -> dict[str, list[tuple[int, float]]]:
    """train_log.csv as curves: every numeric column but the counters, and tokens/s between logged steps."""
    curves: dict[str, list[tuple[int, float]]] = {}
    last_tokens, last_time = 0.0, 0.0
    with open(train_log, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(float(row["step"]))
            for column, value in row.items():
                if column in ("step", "epoch", "tokens_seen", "elapsed_s") or (number := _number(value)) is None:
                    continue
                curves.setdefault(curve_name(column), []).append((step, number))
            tokens, elapsed = _number(row.get("tokens_seen")), _number(row.get("elapsed_s"))
            if tokens is not None and elapsed is not None:
                if elapsed > last_time:
                    curves.setdefault("tokens_per_s", []).append((step, (tokens - last_tokens) / (elapsed - last_time)))
                last_tokens, last_time = tokens, elapsed
    return curves


def _digest(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _read_bytes(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


def run_tags(row: dict, baseline: bool) -> dict[str, str]:
    """status, best, tied, pruned (a status starting "pruned": stopped early by a search), baseline (a row
    of the table that is no grid point: the base model, ...)."""
    status = str(row.get("status") or "")
    flags = {
        "best": bool(row.get("best")),
        "tied": bool(row.get("tied")),
        "pruned": status.startswith("pruned"),
        "baseline": baseline,
    }
    return {"status": status, **{k: str(v).lower() for k, v in flags.items()}}


def card_path(results: Path, name: str) -> Path | None:
    """The run's model card: its adapter package's, else its export's."""
    for candidate in (results / "adapters" / name / "README.md", results / "export" / name / "README.md"):
        if candidate.is_file():
            return candidate
    return None


def table_rows(comparison_csv: str | Path) -> dict[str, dict]:
    """{run: row} of comparison.csv; empty cells are left out."""
    table = pd.read_csv(comparison_csv, keep_default_na=True)
    rows = {}
    for row in table.to_dict(orient="records"):
        rows[str(row["run"])] = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
    return rows


def row_metrics(row: dict) -> dict[str, float]:
    """The measurements of a table row (val and test figures with their _lo/_hi bounds, retention, time, memory)."""
    return {k: n for k, v in row.items() if k not in SETTING_COLUMNS and (n := _number(v)) is not None}


def read_run(results: Path, name: str, row: dict, point: dict | None) -> RunRecord:
    """A run's record: `point` is its settings as the workflow passed them to training; None: a baseline."""
    run_dir = results / "runs" / name
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in (point or {}).items()}
    params.update({k: str(row[k]) for k in DERIVED_PARAMS if k in row})
    log_path, stats_path = run_dir / "train_log.csv", run_dir / "train_stats.json"
    steps = read_curves(log_path) if log_path.is_file() else {}
    stats = read_json(stats_path) if stats_path.is_file() else {}
    metrics = row_metrics(row)
    metrics.update(
        {f"stats/{k}": n for k, v in stats.items() if not isinstance(v, bool) and (n := _number(v)) is not None}
    )
    card = card_path(results, name)
    span = None
    if log_path.is_file() and _number(stats.get("train_time_s")) is not None:  # the log is written as training ends
        end = log_path.stat().st_mtime
        span = (int(1000 * (end - float(stats["train_time_s"]))), int(1000 * end))
    artifacts = [p for p in (card, log_path) if p is not None and p.is_file()]
    return RunRecord(
        name=name,
        params=params,
        steps=steps,
        metrics=metrics,
        tags=run_tags(row, point is None),
        artifacts=artifacts,
        train_digest=_digest(params, _read_bytes(log_path), _read_bytes(stats_path)),
        table_digest=_digest({k: str(v) for k, v in row.items()}, _read_bytes(card) if card else b""),
        span_ms=span,
    )


def read_sweep(comparison_csv: str | Path, points: dict[str, dict]) -> list[RunRecord]:
    """A record per row of the table, in its order: the runs in `points` ({run: settings}) and the baselines
    (the other rows: the base model, ...), which are mirrored beside them to compare against."""
    results = Path(comparison_csv).parent
    return [read_run(results, name, row, points.get(name)) for name, row in table_rows(comparison_csv).items()]
