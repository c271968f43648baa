"""Workflow overhead: `snakemake -n` on the finished default run, and on a 1,000-point grid.

    .venv/bin/python benchmarks/bench_dryrun.py [--points-side 10] [--configfile config/examples/methods.yaml]

--configfile times the dry run on the finished run of that config (e.g. the methods example)
instead of the default one.

The big grid is r (10 values) x lora_alpha (10) x seeds (10) = 1,000 points, dry-run in a scratch
directory (nothing is trained); it prints the wall time and the number of jobs planned.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def dry_run(workdir: Path, *extra: str) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "-n", "--quiet", "rules", *extra], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    total = re.search(r"^total\s+(\d+)", proc.stdout, re.M)
    return seconds, int(total.group(1)) if total else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points-side", type=int, default=10)
    ap.add_argument("--configfile", help="time the dry run of this config's finished run instead of the default one")
    args = ap.parse_args()
    n = args.points_side

    if args.configfile:
        results_dir = yaml.safe_load(Path(args.configfile).read_text())["results_dir"]
        if not (REPO / results_dir / "comparison.csv").is_file():
            raise SystemExit(f"{args.configfile}: run it first ({results_dir}/comparison.csv is missing)")
        seconds, jobs = dry_run(REPO, "--configfile", str(Path(args.configfile).resolve()))
        print(f"snakemake -n on the finished run of {args.configfile}: {seconds:.2f} s, {jobs} jobs to do")
    elif (REPO / "results" / "comparison.csv").is_file():
        seconds, jobs = dry_run(REPO)
        print(f"snakemake -n on the finished default run: {seconds:.2f} s, {jobs} jobs to do")
    else:
        print("no finished default run (results/comparison.csv): timing the big grid only")
    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load((REPO / "config.yaml").read_text())
        config["grid"] = {
            "r": [i + 1 for i in range(n)],
            "lora_alpha": [4 * (i + 1) for i in range(n)],
            "target_modules": ["qv"],
            "seeds": list(range(n)),
        }
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(config))
        seconds, jobs = dry_run(Path(tmp))
    print(f"snakemake -n on a {n}x{n}x{n} = {n**3}-point grid: {seconds:.2f} s, {jobs} jobs planned")


if __name__ == "__main__":
    main()
