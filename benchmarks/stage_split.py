"""Per-stage time split of a finished run, from its Snakemake benchmark files (results/benchmarks/**.tsv).

Prints, per rule: jobs, total seconds, share of all job seconds, mean seconds per job, peak max_rss;
then the fixed start-up cost of a model job (python + torch/transformers/peft imports, measured here
in fresh processes) times the number of model jobs. Two results dirs: both side by side (before/after).

    .venv/bin/python benchmarks/stage_split.py results [other_results] [--imports 3]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

MODEL_RULES = {"train", "evaluate", "evaluate_base", "merge", "preflight", "rank_analysis", "combine"}


def split(results: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(results / "benchmarks")
        rule = rel.parts[0] if len(rel.parts) > 1 else tsv.stem
        with open(tsv, encoding="utf-8") as fh:
            row = next(csv.DictReader(fh, delimiter="\t"), None)
        if row is None:
            continue
        entry = out.setdefault(rule, {"jobs": 0, "s": 0.0, "max_rss": 0.0})
        entry["jobs"] += 1
        entry["s"] += float(row["s"])
        entry["max_rss"] = max(
            entry["max_rss"], float(row["max_rss"]) if row["max_rss"] not in ("", "NA", "-") else 0.0
        )
    return out


def import_seconds(repeats: int) -> float:
    code = (
        "import torch, transformers, peft; from transformers import AutoModelForCausalLM; "
        "from peft import get_peft_model"
    )
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--imports", type=int, default=3, help="fresh-process import timings (best of N); 0 = skip")
    args = ap.parse_args()
    splits = [split(Path(r)) for r in args.results]
    rules = sorted({k for s in splits for k in s}, key=lambda k: -max(s.get(k, {"s": 0})["s"] for s in splits))
    head = f"{'rule':22s}" + "".join(
        f"{'jobs':>6s}{'total s':>10s}{'share':>8s}{'s/job':>9s}{'max_rss MB':>12s}  " for _ in splits
    )
    print("  ".join(args.results))
    print(head)
    for rule in rules:
        cells = ""
        for s in splits:
            total = sum(v["s"] for v in s.values()) or 1.0
            e = s.get(rule)
            cells += (
                f"{e['jobs']:>6d}{e['s']:>10.1f}{100 * e['s'] / total:>7.1f}%"
                f"{e['s'] / e['jobs']:>9.1f}{e['max_rss']:>12,.0f}  "
                if e
                else f"{'':>45s}  "
            )
        print(f"{rule:22s}{cells}")
    for r, s in zip(args.results, splits):
        jobs = sum(v["jobs"] for k, v in s.items() if k in MODEL_RULES)
        print(
            f"{r}: {sum(v['s'] for v in s.values()):,.1f} job-seconds in {sum(v['jobs'] for v in s.values())} jobs, "
            f"{jobs} model jobs"
        )
    if args.imports:
        sec = import_seconds(args.imports)
        print(
            f"start-up of a model job (python + torch, transformers, peft imports; best of {args.imports}): {sec:.1f} s"
        )


if __name__ == "__main__":
    main()
