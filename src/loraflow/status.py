"""`loraflow status`: where a sweep stands, read from its results directory while Snakemake runs.

One line per run: planned, training x % (ETA), trained, evaluating, done, or failed with the last error
line of its log; then the sweep's ETA: the running run's own ETA plus, for every run not yet trained,
the mean time the finished runs took to train and evaluate. Everything comes from files the stages
write (runs/<run>/preflight.json, progress.json, train_stats.json, eval.json and the job logs), so it
works the same locally and on a cluster with a shared filesystem, and never disturbs the jobs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from loraflow.train.progress import INTERVAL_S, duration

ERROR_MARKERS = ("loraflow error:", "Error", "error:", "Traceback", "Killed")


@dataclass
class RunState:
    run: str
    state: str  # planned | training | trained | evaluating | done | failed
    detail: str = ""
    eta_s: float | None = None  # training runs: what is left of their training
    spent_s: float | None = None  # done runs: training + evaluation seconds


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def last_error(log: Path) -> str | None:
    """The last line of a job log that reports an error, in its latest attempt (a job log is appended to
    by every attempt, each opening with `job started`); None when it reports none."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if "job started" in line]
    lines = lines[starts[-1] :] if starts else lines
    hits = [line.strip() for line in lines if any(m in line for m in ERROR_MARKERS)]
    return hits[-1][:200] if hits else None


def _eval_seconds(results: Path, run: str) -> float:
    """Wall seconds of the run's evaluate job (its Snakemake benchmark), 0 when unknown."""
    try:
        rows = (results / "benchmarks" / "evaluate" / f"{run}.tsv").read_text(encoding="utf-8").splitlines()
        return float(rows[1].split("\t")[0])
    except (OSError, IndexError, ValueError):
        return 0.0


def run_state(results: Path, run: str, now: float) -> RunState:
    d, logs = results / "runs" / run, results / "logs"
    stats, metrics = d / "train_stats.json", d / "eval.json"
    if metrics.is_file() and _mtime(metrics) >= _mtime(stats):
        train = _json(stats) or {}
        spent = (train.get("train_time_s") or 0.0) + (train.get("eval_time_s") or 0.0) + _eval_seconds(results, run)
        return RunState(run, "done", spent_s=spent)
    if stats.is_file():
        log = logs / "evaluate" / f"{run}.log"
        if _mtime(log) > _mtime(stats):
            error = last_error(log)
            return RunState(run, "failed", f"in evaluate: {error}") if error else RunState(run, "evaluating")
        return RunState(run, "trained", "waiting for evaluation")
    log, progress = logs / "train" / f"{run}.log", _json(d / "progress.json")
    if _mtime(log) and (error := last_error(log)):
        return RunState(run, "failed", f"in train: {error}")
    if progress:  # (the train log is written at every step, progress.json every INTERVAL_S seconds)
        age = now - progress.get("updated", now)
        stale = f", no update for {duration(age)}" if age > 3 * INTERVAL_S else ""
        detail = (
            f"{progress['percent']:.0f} % (step {progress['step']}/{progress['total_steps']}, "
            f"{progress['tokens_per_s']:.0f} tokens/s, ETA {duration(progress['eta_s'])}{stale})"
        )
        return RunState(run, "training", detail, eta_s=progress["eta_s"])
    if _mtime(log):
        return RunState(run, "training", "starting", eta_s=None)
    return RunState(run, "planned")


def run_names(results: Path) -> list[str]:
    """Every run with a pre-flight check, a run directory or a train log (grid points, combinations, reductions)."""
    names = set()
    if (results / "runs").is_dir():
        names |= {p.name for p in (results / "runs").iterdir() if p.is_dir()}
    if (results / "logs" / "train").is_dir():
        names |= {p.stem for p in (results / "logs" / "train").glob("*.log")}
    return sorted(names)


def sweep_eta(states: list[RunState]) -> str:
    """The sweep's remaining time: running runs' ETAs plus the mean time of a finished run for each run
    not trained yet (unknown until one run has finished)."""
    done = [s.spent_s for s in states if s.state == "done" and s.spent_s]
    waiting = [s for s in states if s.state in ("planned",) or (s.state == "training" and s.eta_s is None)]
    running = sum(s.eta_s or 0.0 for s in states if s.state == "training")
    counts = {
        k: sum(s.state == k for s in states) for k in ("done", "training", "trained", "evaluating", "planned", "failed")
    }
    head = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    if waiting and not done:
        return f"sweep: {head}; ETA unknown until a run has finished"
    eta = running + len(waiting) * (sum(done) / len(done) if done else 0.0)
    return f"sweep: {head}; ETA {duration(eta)}" if eta else f"sweep: {head}"


def status_lines(results_dir: str, now: float | None = None) -> list[str]:
    results = Path(results_dir)
    now = time.time() if now is None else now
    states = [run_state(results, name, now) for name in run_names(results)]
    if not states:
        return [f"{results}: no runs yet"]
    width = max(len(s.run) for s in states)
    lines = [f"{s.run.ljust(width)}  {s.state}{' ' + s.detail if s.detail else ''}" for s in states]
    return [*lines, sweep_eta(states)]
