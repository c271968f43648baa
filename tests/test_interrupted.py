"""A rerun killed part-way (kill -9 of Snakemake and its job) never leaves the sweep looking complete: the
next plan rebuilds what the kill removed, and the README's command ends in the table of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, SNAKEMAKE, TIMING, planned_jobs, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow
RUNS = ("r2_a8_qv", "r4_a8_qv")
README_RUN = ("--cores", "1", "--resources", "gpu=1")  # the README's run command
NOTHING = "Nothing to be done"


def table_evidence(res: Path) -> list[Path]:
    """The files the table is built from (its inputs on the tiny sweep)."""
    per_run = ("eval.json", "scores.jsonl", "train_stats.json", "rank_summary.json")
    return [
        res / "base/eval.json",
        res / "base/scores.jsonl",
        *(res / "runs" / run / name for run in RUNS for name in per_run),
    ]


@pytest.fixture(scope="module")
def finished(finished_run) -> Path:
    """The tiny sweep run once to the end (the uninterrupted run; conftest's, shared and only copied here)."""
    return finished_run[0]


def removed_when_started(res: Path, stage: str) -> list[Path]:
    """Outputs the forced `stage` job removes as it starts: the first one gone shows the job is under way."""
    if stage == "table":
        return [res / "comparison.csv"]
    if stage == "merge":
        return [res / "runs" / json.loads((res / "best.json").read_text())["run"] / "merge_check.json"]
    name = {"train": "train_stats.json", "evaluate": "eval.json"}[stage]
    return [res / "runs" / run / name for run in RUNS]


def kill_while_running(workdir: Path, stage: str, timeout: float = 300) -> list[Path]:
    """Start the README command with `stage` forced and kill -9 its process group once the stage's first
    job has removed its outputs and is running; the outputs it had removed."""
    watched = removed_when_started(workdir / "results", stage)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [*SNAKEMAKE, "--directory", str(workdir), *README_RUN, "--forcerun", stage]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while all(f.exists() for f in watched):
            assert proc.poll() is None, f"--forcerun {stage} ended before its job could be killed"
            assert time.monotonic() < deadline, f"no {stage} job started within {timeout} s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return [f for f in watched if not f.exists()]


def table(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "results/comparison.csv").drop(columns=TIMING)


@pytest.mark.parametrize("stage", ["evaluate", "train", "table", "merge"])
def test_a_killed_rerun_is_planned_again_and_ends_in_the_uninterrupted_table(finished, tmp_path, stage):
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True, symlinks=True)
    res = tmp_path / "results"
    assert kill_while_running(tmp_path, stage)  # killed where it hurts: the job had removed what it was rewriting
    snakemake(tmp_path, "--unlock")

    # the merge is not the table's evidence: there the table itself is complete and up to date
    for target in [()] if stage == "merge" else [("results/comparison.md",), ()]:
        proc = snakemake(tmp_path, "-n", *target)
        assert NOTHING not in proc.stdout + proc.stderr, f"after a kill in {stage}: dry run {target} has nothing to do"
    # no summary is left standing on evidence that is gone
    assert not (res / "comparison.csv").exists() or all(f.exists() for f in table_evidence(res))

    snakemake(tmp_path, *README_RUN)
    assert all(f.exists() for f in table_evidence(res))
    pd.testing.assert_frame_equal(table(tmp_path), table(finished))
    assert pd.read_csv(res / "merges.csv")["passed"].all() and (res / "plots/headline.png").is_file()
    assert planned_jobs(tmp_path) == {}


# the rule that writes each kind of the table's evidence
PRODUCER = {
    "base/eval.json": "evaluate_base",
    "base/scores.jsonl": "evaluate_base",
    "eval.json": "evaluate",
    "scores.jsonl": "evaluate",
    "train_stats.json": "train",
    "rank_summary.json": "rank_analysis",
}


def test_any_missing_input_of_the_table_is_planned_again(finished, tmp_path):
    """Whatever removed it, any input of a finished table that is missing is rebuilt by the next plan, the
    table with it: the dry run never has nothing to do."""
    for i, evidence in enumerate(table_evidence(finished / "results")):
        workdir = tmp_path / str(i)
        shutil.copytree(finished, workdir, symlinks=True)
        (workdir / evidence.relative_to(finished)).unlink()
        jobs = planned_jobs(workdir)
        rel = evidence.relative_to(finished / "results").as_posix()
        producer = PRODUCER.get(rel, PRODUCER[evidence.name])
        assert {producer, "table"} <= set(jobs), f"{rel} missing: planned {jobs}"
        shutil.rmtree(workdir)


def test_a_new_grid_point_removes_no_table(finished, tmp_path, tiny_model):
    """Only evidence the table reports on counts: a new grid point's files are new work (its changed params
    rerun the table), not evidence that went missing, so a dry run leaves the finished table where it is."""
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True, symlinks=True)
    config = tiny_config(tiny_model)
    config["grid"]["r"] = [2, 4, 8]
    write_config(tmp_path, config)
    before = (tmp_path / "results/comparison.csv").read_bytes()
    assert planned_jobs(tmp_path)["table"] == 1
    assert (tmp_path / "results/comparison.csv").read_bytes() == before
