"""Planning cost of successive halving: `snakemake -n` on a 1,000-point halving sweep.

    .venv/bin/python benchmarks/bench_halving_plan.py [--eta 3] [--min-steps 20]

The grid is r (5) x lora_alpha (5) x target_modules (2) x learning_rate (4) x seeds (5) = 1,000 points
of the default config with search.method halving and train.max_steps 0 (epochs: every rung is planned),
dry-run in a scratch directory (nothing is trained). It prints the wall time, the rung budgets and the
jobs planned before the first cut (the later rungs are added as the cuts finish).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dryrun import REPO, dry_run  # noqa: E402


def halving_config(eta: int, min_steps: int) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    config["grid"] = {
        "r": [2, 4, 8, 16, 32],
        "lora_alpha": [8, 16, 32, 64, 128],
        "target_modules": ["qv", "attn"],
        "learning_rate": [0.0001, 0.0003, 0.001, 0.003],
        "seeds": [1, 2, 3, 4, 5],
    }
    config["train"]["max_steps"] = 0
    config["search"] = {"method": "halving", "eta": eta, "min_steps": min_steps}
    return config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--min-steps", type=int, default=20)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from loraflow.config import expand_grid, validate_config
    from loraflow.search.halving import rung_budgets

    config = halving_config(args.eta, args.min_steps)
    points = len(expand_grid(validate_config(yaml.safe_load(yaml.safe_dump(config)))))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        seconds, jobs = dry_run(Path(tmp))
    print(
        f"snakemake -n on a {points}-point halving sweep (eta {args.eta}, rungs at steps "
        f"{rung_budgets(points, args.eta, args.min_steps)}): {seconds:.2f} s, {jobs} jobs planned before the first cut"
    )


if __name__ == "__main__":
    main()
