"""The table after a failed workflow, from the run layout on disk: the workflow's `onerror` handler
(e.g. under --keep-going) calls `write_partial_comparison`, which tabulates the runs that finished and
lists the failed ones with the stage that failed and the error from its log.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loraflow.io import read_json
from loraflow.report.rows import eval_columns, finish, grid_columns, rank_columns, run_row
from loraflow.report.settings import TableSettings
from loraflow.report.table import Scoring, select_and_score, write_tables


def _last_error(log_path: Path) -> str:
    if not log_path.is_file():
        return "not run"
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors[-1] if errors else lines[-1] if lines else "no log output")[:300]


def _preflight_error(log_path: Path, run: str) -> str:
    """The pre-flight job checks every point in one log; the line naming this run, or the job's last error."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
    mine = [line.split(f"{run}: ", 1)[1] for line in lines if f" {run}: " in line]
    return mine[-1][:300] if mine else (f"not checked: {_last_error(log_path)}" if lines else "not run")


def write_partial_comparison(
    results_dir: str,
    runs: dict[str, dict],
    settings: TableSettings = TableSettings(),
    merged: list[str] | None = None,
    halving: bool = False,
) -> pd.DataFrame | None:
    """After a failed workflow: rows for finished runs, a FAILED row (stage + error) for the rest; with `halving`
    (search.method halving) a `pruned at step N` row for the points the latest cut so far (search/select<k>.json)
    stopped.
    `merged`: the runs whose merge is part of the run (merge.runs; None = every run with an adapter).
    `settings`: those of the table stage; the row groups come from the test split under `results_dir`."""
    best_metric = settings.best_metric
    res = Path(results_dir)
    if not (res / "base" / "eval.json").is_file():
        return None
    rows = [{"run": "base", "status": "ok", **eval_columns(read_json(res / "base" / "eval.json"))}]
    scores = {}
    cuts = (
        sorted(res.glob("search/select*.json"), key=lambda p: int(p.stem.removeprefix("select") or 0))
        if halving
        else []
    )
    if cuts:
        from loraflow.report.halving import pruned_rows

        rows += pruned_rows(str(cuts[-1]), runs)
        runs = {name: hp for name, hp in runs.items() if name not in {row["run"] for row in rows}}
    for name, hp in runs.items():
        d = res / "runs" / name
        files = {
            "preflight": d / "preflight.json",
            "train": d / "train_stats.json",
            "evaluate": d / "eval.json",
            "merge": d / "merge_check.json",
        }
        if hp.get("method") == "full" or (merged is not None and name not in merged):
            del files["merge"]
        if hp.get("method") == "combine":  # made by the combine stage, which writes its train_stats.json
            files = {
                "combine": files["train"],
                "evaluate": files["evaluate"],
                **({"merge": files["merge"]} if "merge" in files else {}),
            }
        missing = [stage for stage, f in files.items() if not f.is_file()]
        if not missing:
            rank, merge = d / "rank_summary.json", d / "merge_check.json"
            stats = read_json(files["combine"] if "combine" in files else files["train"])
            rows.append(
                {
                    **run_row(
                        name,
                        hp,
                        stats,
                        read_json(files["evaluate"]),
                        read_json(merge) if merge.is_file() else None,
                        best_metric,
                    ),
                    **rank_columns(read_json(rank) if rank.is_file() else None),
                }
            )
            if (d / "scores.jsonl").is_file():
                scores[name] = str(d / "scores.jsonl")
            continue
        stage = missing[0]
        error = (
            _preflight_error(res / "logs" / "preflight.log", name)
            if stage == "preflight"
            else _last_error(res / "logs" / stage / f"{name}.log")
        )
        rows.append({**grid_columns(name, hp), "status": f"FAILED in {stage}: {error}"})
    df = finish(rows, best_metric)
    scoring = Scoring.of(settings, str(res / "data" / "test.jsonl"))
    paths = (
        {"base": str(res / "base" / "scores.jsonl"), **scores}
        if scores and (res / "base" / "scores.jsonl").is_file()
        else None
    )
    df, boot = select_and_score(df, best_metric, paths, scoring)
    write_tables(df, str(res / "comparison.csv"), str(res / "comparison.md"), best_metric, boot=boot)
    return df
