"""The `loraflow` command.

loraflow init DATAFILE [-o config.yaml]   inspect a data file, write a config that reads it
loraflow runs [RESULTS_DIR]               list the runs of a sweep with their status
loraflow status [RESULTS_DIR]             where a sweep stands: each run's state, progress and ETA
loraflow best [RESULTS_DIR]               the best run of results/comparison.csv and where its files are
loraflow push RUN --repo ID [--gguf]      upload a run's adapter package (or GGUF export) to the Hugging Face Hub
"""

from __future__ import annotations

import argparse
import sys

from loraflow.commands import CliError
from loraflow.commands.init import cmd_init
from loraflow.commands.runs import cmd_best, cmd_runs, cmd_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loraflow", description="LoRA fine-tuning sweeps with Snakemake (see README.md)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="inspect a data file and write a config that reads it")
    p.add_argument("data_file")
    p.add_argument(
        "-o",
        "--output",
        default="config.yaml",
        help="config file to write (default config.yaml; never overwritten without --force)",
    )
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("runs", help="list the runs of a results directory with their status")
    p.add_argument("results_dir", nargs="?", default="results")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser(
        "status", help="where a sweep stands: each run's state, progress and ETA (works while Snakemake runs)"
    )
    p.add_argument("results_dir", nargs="?", default="results")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("best", help="the best run of results/comparison.csv")
    p.add_argument("results_dir", nargs="?", default="results")
    p.set_defaults(func=cmd_best)
    from loraflow.ship.push import add_parser as add_push_parser

    add_push_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"loraflow {args.command}: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        if getattr(err, "expected_error", False) or type(err).__name__ == "ConfigError":
            print(f"loraflow {args.command}: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
