"""`loraflow runs`, `loraflow status` and `loraflow best`: the runs of a results directory, where each
stands, and the best run of results/comparison.csv with where its files are."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from loraflow.commands import CliError


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _comparison(results: Path) -> list[dict]:
    path = results / "comparison.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_status(results: Path, run: str) -> str:
    d = results / "runs" / run
    if (d / "merge_check.json").is_file():
        check = _read_json(d / "merge_check.json") or {}
        return "merged" if check.get("passed", True) else "merge check FAILED"
    if (d / "eval.json").is_file():
        return "evaluated"
    if (d / "adapter").is_dir() or (d / "train_stats.json").is_file():
        return "trained"
    state = _read_json(results / "checkpoints" / run / "state.json")
    if state:
        return f"training (checkpoint at step {state.get('step', '?')})"
    log = results / "logs" / "train" / f"{run}.log"
    if log.is_file():
        text = log.read_text(encoding="utf-8", errors="replace")
        return (
            "failed (see " + str(log) + ")"
            if ("Traceback" in text or " ERROR " in text)
            else "training (no checkpoint yet)"
        )
    return "planned"


def list_runs(results_dir: str) -> list[dict]:
    results = Path(results_dir)
    names = set()
    if (results / "runs").is_dir():
        names |= {p.name for p in (results / "runs").iterdir() if p.is_dir()}
    if (results / "checkpoints").is_dir():
        names |= {p.name for p in (results / "checkpoints").iterdir() if p.is_dir()}
    if (results / "logs" / "train").is_dir():
        names |= {p.stem for p in (results / "logs" / "train").glob("*.log")}
    table = {row["run"]: row for row in _comparison(results)}
    names |= {n for n in table if n != "base"}
    out = []
    for name in sorted(names):
        row = table.get(name, {})
        status = run_status(results, name)
        if row.get("status", "ok") not in ("ok", ""):
            status = row["status"]
        stats = _read_json(results / "runs" / name / "train_stats.json") or {}
        metrics = _read_json(results / "runs" / name / "eval.json") or {}
        out.append(
            {
                "run": name,
                "status": status,
                "val_loss": stats.get("best_eval_loss"),
                "rougeL": metrics.get("rougeL"),
                "best": row.get("best", ""),
            }
        )
    return out


def _fmt(v) -> str:
    if v is None or v == "":
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_runs(args) -> int:
    results = Path(args.results_dir)
    if not results.is_dir():
        raise CliError(f"{results}: no such results directory (results_dir in the config)")
    runs = list_runs(args.results_dir)
    if not runs:
        print(f"{results}: no runs yet")
        return 0
    cols = ["run", "status", "val_loss", "rougeL", "best"]
    cells = [[_fmt(r[c]) for c in cols] for r in runs]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def cmd_status(args) -> int:
    from loraflow.status import status_lines

    if not Path(args.results_dir).is_dir():
        raise CliError(f"{args.results_dir}: no such results directory (results_dir in the config)")
    print("\n".join(status_lines(args.results_dir)))
    return 0


def best_run(results_dir: str) -> dict:
    results = Path(results_dir)
    rows = _comparison(results)
    if not rows:
        raise CliError(
            f"{results / 'comparison.csv'}: not found; the sweep has not reached the table yet (loraflow runs "
            f"{results_dir})"
        )
    best = [r for r in rows if r.get("best")]
    if not best:
        raise CliError(f"{results / 'comparison.csv'}: no run is marked best (no run finished?)")
    return best[0]


def cmd_best(args) -> int:
    row = best_run(args.results_dir)
    results = Path(args.results_dir)
    name = row["run"]
    print(f"{name}  ({row['best']})")
    shown = [
        "method",
        "r",
        "alpha",
        "targets",
        "val_loss",
        "test_loss",
        "bleu",
        "rouge1",
        "rouge2",
        "rougeL",
        "exact_match",
        "accuracy",
        "macro_f1",
    ]
    print("  " + ", ".join(f"{k} {row[k]}" for k in shown if row.get(k) not in (None, "")))
    for what in ("adapter", "merged"):
        path = results / "runs" / name / what
        if path.exists():
            print(f"  {what}: {path}")
    return 0
