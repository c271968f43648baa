"""Successive halving against the full grid: the same grid swept both ways in one invocation.

    .venv/bin/python benchmarks/bench_halving.py --configfile config.yaml --out bench_halving
        [--grid '{"r": [4, 8, 16, 32], "learning_rate": "auto"}'] [--eta 3] [--min-steps 20] [--cores 1]

Each sweep is the config with `grid` updated by --grid (default: r {4, 8, 16, 32} x the auto learning-rate
ladder = 16 points) and its own results directory under --out (grid/, halving/); each is run to its table.
Printed per sweep: the winner (chosen on validation by the table), the training tokens (sum of tokens_seen:
every finished run's train_stats.json, plus for halving each pruned point's tokens up to its cut) and the
wall time; then whether halving's winner is tied for best with the grid's winner on test, by a paired
bootstrap over the test rows both were scored on (the table's own Bootstrap and settings).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def sweep_config(base: dict, grid: dict, method: str, results_dir: Path, eta: int, min_steps: int) -> dict:
    config = json.loads(json.dumps(base))
    config["grid"] = {**config.get("grid", {}), **grid}
    config["search"] = {"method": method, "eta": eta, "min_steps": min_steps}
    config["results_dir"] = str(results_dir)
    return config


def run_sweep(config: dict, workdir: Path, cores: int) -> float:
    """Run the sweep to its table; its wall time in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    start = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        f"{config['results_dir']}/comparison.md",
        "--directory",
        str(workdir),
        "--configfile",
        str(path),
        "--cores",
        str(cores),
        "--resources",
        "gpu=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    if proc.returncode != 0:
        raise SystemExit(f"{config['search']['method']} sweep failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def training_tokens(results: Path) -> int:
    """Tokens every run trained on: finished runs' tokens_seen, plus pruned points' tokens up to their cut."""
    from loraflow.search.halving import pruned_points

    tokens = sum(json.loads(p.read_text())["tokens_seen"] for p in results.glob("runs/*/train_stats.json"))
    cuts = sorted(results.glob("search/select*.json"), key=lambda p: int(p.stem.removeprefix("select")))
    if cuts:
        tokens += sum(r["tokens_seen"] for r in pruned_points(json.loads(cuts[-1].read_text())).values())
    return tokens


def tied(
    grid_res: Path, grid_best: str, halving_res: Path, halving_best: str, table: dict, metric: str
) -> tuple[bool, object]:
    """Whether halving's winner is not significantly worse than the grid's on test (the table's rule), and the
    comparison."""
    from loraflow.report.bootstrap import Bootstrap
    from loraflow.report.rows import lower_is_better, metric_column

    column = metric_column(metric)
    paths = {
        "grid": str(grid_res / "runs" / grid_best / "scores.jsonl"),
        "halving": str(halving_res / "runs" / halving_best / "scores.jsonl"),
    }
    boot = Bootstrap(paths, table["bootstrap_samples"], 42, table["confidence"])
    c = boot.compare("halving", "grid", column)
    if c is None:
        return False, None
    return (c.lo <= 0 if lower_is_better(column) else c.hi >= 0), c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default=str(REPO / "config.yaml"))
    ap.add_argument("--out", required=True, help="a directory for both sweeps (grid/, halving/)")
    ap.add_argument(
        "--grid",
        default='{"r": [4, 8, 16, 32], "learning_rate": "auto"}',
        help="JSON: keys that replace the config's grid",
    )
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--min-steps", type=int, default=20)
    ap.add_argument("--cores", type=int, default=1)
    args = ap.parse_args()
    from loraflow.config import expand_grid, validate_config

    base = yaml.safe_load(Path(args.configfile).read_text(encoding="utf-8"))
    out = Path(args.out).resolve()
    found = {}
    for method in ("grid", "halving"):
        config = sweep_config(base, json.loads(args.grid), method, out / method / "results", args.eta, args.min_steps)
        points = len(expand_grid(validate_config(json.loads(json.dumps(config)))))
        seconds = run_sweep(config, out / method, args.cores)
        res = Path(config["results_dir"])
        best = json.loads((res / "best.json").read_text())["run"]
        found[method] = (res, best)
        print(
            f"{method:8s} {points} points: winner {best}, training tokens {training_tokens(res):,}, wall {seconds:.0f} "
            "s",
            flush=True,
        )
    validated = validate_config(json.loads(json.dumps(base)))
    metric = validated["table"]["best_metric"]
    is_tied, c = tied(*found["grid"], *found["halving"], validated["table"], metric)
    detail = (
        f" (halving - grid on test {metric}: {c.diff:+.4f} [{c.lo:.4f}, {c.hi:.4f}], p = {c.p:.2f})"
        if c
        else " (no paired scores)"
    )
    print(f"halving's winner tied for best with the grid's on test: {'yes' if is_tied else 'no'}{detail}")


if __name__ == "__main__":
    main()
