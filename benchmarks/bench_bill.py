"""The pre-flight's bill against what the sweep then measured, point by point.

    .venv/bin/python benchmarks/bench_bill.py RESULTS_DIR [RESULTS_DIR ...]

For every run of a finished grid sweep with a priced pre-flight (runs/<run>/preflight.json) and its
training (runs/<run>/train_stats.json; a halving survivor trains in pieces, so a halving sweep is left
out): the priced training time (`est_train_time_s`: start-up, steps and validations) against the
measured one (the train loop's time plus its validations, `train_time_s + eval_time_s`; the train job's
wall time from benchmarks/train/<run>.tsv, start-up included, next to it), and the calibrated peak
memory against the measured peak. Prints each run and the median and worst error of each.

To price the same runs again with the current code, rerun the pre-flight alone in the sweep's directory
(`snakemake --forcerun preflight --until preflight_table ...`, the sweep's own config) and run this again.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path


def rows(results: Path) -> list[dict]:
    out = []
    for stats_path in sorted(results.glob("runs/*/train_stats.json")):
        run = stats_path.parent.name
        pre_path = stats_path.parent / "preflight.json"
        if not pre_path.exists():
            continue
        pre, stats = json.loads(pre_path.read_text()), json.loads(stats_path.read_text())
        if "est_train_time_s" not in pre or stats.get("steps") != pre.get("planned_steps"):
            continue
        bench = results / "benchmarks" / "train" / f"{run}.tsv"
        wall = None
        if bench.exists():
            with bench.open() as f:
                wall = float(next(csv.DictReader(f, delimiter="\t"))["s"])
        out.append(
            {
                "run": run,
                "priced_s": pre["est_train_time_s"],
                "measured_s": stats["train_time_s"] + stats.get("eval_time_s", 0.0),
                "job_s": wall,
                "priced_mb": pre.get("calibrated_peak_memory_mb"),
                "measured_mb": stats.get("peak_memory_mb"),
            }
        )
    return out


def error(priced: float | None, measured: float | None) -> float | None:
    return None if not priced or not measured else 100.0 * (priced - measured) / measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="results directories of finished sweeps")
    args = ap.parse_args()
    for results in map(Path, args.results):
        if (results / "search").is_dir():
            print(f"{results}: a halving sweep (its survivors trained in pieces): price a grid sweep")
            continue
        found = rows(results)
        print(f"{results}: {len(found)} run(s) priced and trained straight")
        print(
            f"{'run':32s} {'priced s':>9s} {'measured s':>10s} {'error':>8s} {'job s':>7s} {'priced MB':>9s} "
            f"{'peak MB':>8s} {'error':>8s}"
        )
        time_errors, memory_errors = [], []
        for r in found:
            te, me = error(r["priced_s"], r["measured_s"]), error(r["priced_mb"], r["measured_mb"])
            time_errors += [te] if te is not None else []
            memory_errors += [me] if me is not None else []
            job = f"{r['job_s']:7.0f}" if r["job_s"] else "      -"
            print(
                f"{r['run']:32s} {r['priced_s']:9.0f} {r['measured_s']:10.0f} {te:+7.1f}% {job} "
                f"{r['priced_mb'] or 0:9.0f} {r['measured_mb'] or 0:8.0f} "
                + (f"{me:+7.1f}%" if me is not None else "       -")
            )
        for name, errs in (("time", time_errors), ("memory", memory_errors)):
            if errs:
                worst = max(errs, key=abs)
                print(f"{name}: median error {statistics.median(errs):+.1f} %, worst {worst:+.1f} % ({len(errs)} runs)")


if __name__ == "__main__":
    main()
