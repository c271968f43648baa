# A summary stands only on the evidence it was built from.
#
# Snakemake accepts a missing intermediate file while the files built from it exist and look up to date
# (that is what lets temp() files go), and a job removes its own outputs when it starts. So a rerun killed
# while, say, one run is being evaluated leaves that run's eval.json and scores.jsonl gone and the old table
# in place, with nothing newer than it and no changed setting: the next plan has nothing to do and the
# table keeps showing figures of files that no longer exist. (A job that fails is cleaned up by Snakemake
# and so planned again; a killed one is not.)
#
# So, before any plan, a summary (the table, the report's figures, the merge summary) is removed when a file
# it was built from is missing: the plan then rebuilds it and, to do so, the missing evidence. A run the
# summary does not report on (a new grid point, a FAILED row of a partial table) claims no evidence here: its
# summary reruns anyway, through its changed params. Only the main process checks (a cluster job parses this
# file too, while the run's own jobs are under way).
import os
import shutil
import sys


def reported_runs(csv_path: str) -> set[str] | None:
    """The runs a summary reports as finished (its `run` column, FAILED rows aside); None if unreadable."""
    import csv

    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            return {row["run"] for row in csv.DictReader(fh) if not str(row.get("status") or "").startswith("FAILED")}
    except (OSError, KeyError, UnicodeDecodeError, csv.Error):
        return None


def missing_evidence(inputs, runs: set[str] | None) -> list[str]:
    """The `inputs` that are missing. A run's file (<results>/runs/<run>/...) counts only for the `runs`
    the summary reports on (None: every run)."""
    prefix = f"{R}/runs/"
    gone = []
    for path in inputs:
        if not isinstance(path, str):  # an input function: known only once the plan is built
            continue
        run = path[len(prefix) :].split("/", 1)[0] if path.startswith(prefix) else None
        if run is not None and runs is not None and run not in runs:
            continue
        if not os.path.exists(path):
            gone.append(path)
    return gone


def drop_stale(outputs, evidence, reported_in: str) -> list[str]:
    """Remove `outputs` when a file of `evidence` (of the runs `reported_in` lists) is missing; the removed paths."""
    present = [str(f) for f in outputs if os.path.exists(f)]
    if not present:
        return []
    gone = missing_evidence(evidence, reported_runs(reported_in))
    if not gone:
        return []
    for path in present:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
    print(
        f"{', '.join(present)}: built from files that are gone ({', '.join(gone[:3])}{more}); removed, so that "
        "they are rebuilt from complete evidence",
        file=sys.stderr,
    )
    return present


if workflow.is_main_process:
    # under search.method halving the per-run inputs are functions of the last cut: halving_evidence (search.smk)
    drop_stale(rules.table.output, [*rules.table.input, *halving_evidence()], rules.table.output.out_csv)
    if CAUSAL_LM:
        drop_stale(
            rules.report_figures.output, [*rules.report_figures.input, *halving_evidence()], rules.table.output.out_csv
        )
        merges_csv = rules.merge_summary.output.out_csv
        merged = reported_runs(merges_csv) or set()
        drop_stale(
            rules.merge_summary.output,
            [
                *expand(rules.merge.output.out_check, run=sorted(merged)),
                *expand(rules.merge.output.out_dir, run=sorted(merged)),
            ],
            merges_csv,
        )
