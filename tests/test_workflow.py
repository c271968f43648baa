"""The whole Snakemake workflow on the tiny model: outputs, table, and what a rerun redoes."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, assert_same_results, planned_jobs, planned_resources, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


def test_pipeline_outputs_and_table(finished_run):
    workdir, proc = finished_run
    res = workdir / "results"
    for run in ("r2_a8_qv", "r4_a8_qv"):
        d = res / "runs" / run
        assert (d / "adapter" / "adapter_config.json").is_file()
        assert (d / "adapter" / "adapter_model.safetensors").is_file()
        log = pd.read_csv(d / "train_log.csv")
        assert list(log["step"]) == [1, 2, 3, 4] and log["eval_loss"].notna().sum() == 2
        samples = [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 12 and {"prompt", "reference", "base_answer", "tuned_answer"} <= set(samples[0])
    stats = json.loads((res / "data" / "split_stats.json").read_text())
    assert (
        stats["conserved"]
        and stats["rows_in"] == 240 == stats["train"] + stats["val"] + stats["test"] + stats["rejected"]
    )
    table = pd.read_csv(res / "comparison.csv")
    assert list(table["run"]) == ["base", "r2_a8_qv", "r4_a8_qv"]
    assert (table["best"].fillna("") != "").sum() == 1
    assert table.loc[1, "trainable_params"] * 2 == table.loc[2, "trainable_params"]
    md = (res / "comparison.md").read_text()
    assert "| base |" in md and "Best run by `rougeL`" in md
    assert "Best run by `rougeL`" in proc.stdout + proc.stderr  # the table is printed at the end
    for rule in ("base_model", "clean", "tokenize", "preflight", "preflight_table", "table", "merge_summary"):
        assert (res / "logs" / f"{rule}.log").is_file() and (res / "benchmarks" / f"{rule}.tsv").is_file()


def test_only_the_best_run_is_merged_and_its_check_is_reported(finished_run):
    """merge.runs: best (the default): one merged model, the table's best run; its check in merges.{csv,md}."""
    workdir, proc = finished_run
    res = workdir / "results"
    table = pd.read_csv(res / "comparison.csv")
    best = table.loc[table["best"].fillna("") != "", "run"].item()
    assert json.loads((res / "best.json").read_text()) == {
        "run": best,
        "metric": "rougeL",
        "split": "val",
    }  # chosen on validation
    merged = sorted(p.parent.name for p in res.glob("runs/*/merged"))
    assert merged == [best]
    check = json.loads((res / "runs" / best / "merge_check.json").read_text())
    assert check["passed"] and check["max_abs_logit_diff"] <= check["tolerance"]
    assert (res / "runs" / best / "merged" / "model.safetensors").is_file()
    summary = pd.read_csv(res / "merges.csv")
    assert list(summary["run"]) == [best] and summary.loc[0, "max_abs_logit_diff"] == check["max_abs_logit_diff"]
    assert f"is **{best}**" in (res / "merges.md").read_text() and "# Merged models" in proc.stdout + proc.stderr
    # the table did not wait for the merge: it was written before the merge job started
    assert (res / "comparison.csv").stat().st_mtime <= (res / "runs" / best / "merge_check.json").stat().st_mtime
    pre = pd.read_csv(res / "preflight.csv").set_index("run")
    assert (pre["merged_mb_fp32"] == 2 * pre["merged_mb_bf16"]).all() and (pre["merged_mb_fp32"] > 0).all()


def test_the_preflight_estimates_the_memory_the_train_stage_estimates(finished_run):
    """The pre-flight, run after tokenising, bounds a forward pass by the longest train rows as the train
    stage does: both estimate the same peak (before, it assumed rows of max_length)."""
    workdir, _ = finished_run
    res = workdir / "results"
    tokens = json.loads((res / "tokens" / "meta.json").read_text())
    meta = tokens["splits"]["train"]
    assert 0 < meta["longest"] <= tokens["max_length"]
    for run in ("r2_a8_qv", "r4_a8_qv"):
        pre = json.loads((res / "runs" / run / "preflight.json").read_text())
        assert (pre["train_rows"], pre["longest_train_tokens"]) == (meta["examples"], meta["longest"])
        stats = json.loads((res / "runs" / run / "train_stats.json").read_text())
        assert stats["preflight_est_memory_mb"] == pytest.approx(stats["est_memory_mb"], rel=1e-9)


def job_intervals(res: Path, rules: tuple[str, ...]) -> dict[str, tuple]:
    """{job log: (start, end)} from each job's log: runner.call_stage logs 'job started' first and 'done in' last."""
    from datetime import datetime

    def stamp(line: str) -> float:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()

    intervals = {}
    for rule in rules:
        for log in sorted((res / "logs" / rule).glob("*.log")):
            lines = log.read_text().splitlines()
            start = next(line for line in lines if "job started" in line)
            end = [line for line in lines if " done in " in line][-1]
            intervals[f"{rule}/{log.stem}"] = (stamp(start), stamp(end))
    return intervals


MODEL_RULES = (
    "train",
    "evaluate",
    "merge",
    "combine",
)  # the rules with resources gpu (evaluate/ holds evaluate_base's log too)


def test_model_jobs_never_ran_at_the_same_time(finished_run):
    """Under --cores 1 --resources gpu=1 no two gpu jobs of the real workflow overlapped (train -> evaluate
    and merge of one run become ready together: the shape of snakemake #3913)."""
    workdir, _ = finished_run
    jobs = job_intervals(workdir / "results", MODEL_RULES)
    assert len(jobs) >= 6  # 2 train, 3 evaluate (base + 2), 1 merge
    items = sorted(jobs.items(), key=lambda kv: kv[1])
    overlaps = [(a, b) for (a, (s1, e1)), (b, (s2, e2)) in zip(items, items[1:]) if s2 < e1]
    assert not overlaps, f"gpu jobs overlapped: {overlaps}"


def test_model_jobs_use_exactly_their_declared_threads(finished_run):
    """torch_threads 1: every model job declared 1 thread to Snakemake and torch used 1."""
    workdir, _ = finished_run
    logs = [p for rule in MODEL_RULES for p in (workdir / "results" / "logs" / rule).glob("*.log")]
    assert len(logs) >= 6
    for log in logs:
        assert "torch threads: 1 (job threads: 1)" in log.read_text(), log


def test_declared_threads_and_gpus_follow_the_config(tmp_path, tiny_model):
    """Dry run: model jobs declare torch_threads (x nproc_per_node for train) and train asks for
    nproc_per_node GPU slots; torch_threads 0 declares every CPU of the machine, whatever --cores. The
    pre-flight times real train steps for its bill, so it declares a train process's threads too."""
    config = tiny_config(tiny_model)
    config["torch_threads"] = 3
    config["train"]["nproc_per_node"] = 2
    write_config(tmp_path, config)
    jobs = planned_resources(tmp_path, "--cores", "64")
    assert jobs["train"] == {"threads": 6, "gpu": 2}
    assert jobs["evaluate_base"] == jobs["base_model"] | {"gpu": 1} == {"threads": 3, "gpu": 1}
    assert jobs["preflight"] == {"threads": 3} and jobs["tokenize"] == {"threads": 1}
    config["torch_threads"] = 0
    write_config(tmp_path, config)
    jobs = planned_resources(tmp_path, "--cores", "64")
    cpus = len(os.sched_getaffinity(0))
    assert jobs["train"]["threads"] == jobs["evaluate_base"]["threads"] == jobs["preflight"]["threads"] == cpus


def test_rerun_has_nothing_to_do(finished_run):
    workdir, _ = finished_run
    assert planned_jobs(workdir) == {}


# Rerun scope, one row per class of config key: what a dry run on the finished tiny run plans after the
# change. With merge.runs: best the table is a checkpoint: when it reruns, the merge of the (possibly
# new) best run is added once the table has picked it, so a dry run cannot list that merge yet.
DOWNSTREAM_OF_TRAIN = {
    "train": 2,
    "evaluate": 2,
    "rank_analysis": 2,
    "table": 1,
    "report_figures": 1,
    "choice_figure": 1,
    "merge_summary": 1,
    "all": 1,
}
RERUN_SCOPE = {
    # keys that cannot change a result: read by the jobs at run time, outside params
    "neutral": ({"train": {"checkpoint_every": 3, "learning_rate_full": 1e-4}, "torch_threads": 2}, {}),
    # the same adapter (recomputed activations): nothing reruns, not even the pre-flight (new checks use it)
    "memory only": ({"train": {"gradient_checkpointing": True, "max_memory_mb": 100000}}, {}),
    # a training setting whose new value the params already hold under another key (warmup 0 -> 1 while
    # grad_accum is 1): flat params compared as a set of values would miss it
    "train": ({"train": {"warmup_steps": 1}}, DOWNSTREAM_OF_TRAIN),
    # checked by the pre-flight too (memory estimate): every point is checked again (one job), cheaply
    "train+preflight": ({"train": {"batch_size": 2}}, {"preflight": 1, "preflight_table": 1, **DOWNSTREAM_OF_TRAIN}),
    # a new point and a training setting at once: the new point is checked, every point (re)trains
    "grid point added + train": (
        {"grid": {"r": [2, 4, 8]}, "train": {"warmup_steps": 1}},
        {"preflight": 1, "preflight_table": 1, **DOWNSTREAM_OF_TRAIN, "train": 3, "evaluate": 3, "rank_analysis": 3},
    ),
    "evaluate": (
        {"evaluate": {"max_new_tokens": 6}},
        {
            "evaluate_base": 1,
            "evaluate": 2,
            "table": 1,
            "report_figures": 1,
            "choice_figure": 1,
            "merge_summary": 1,
            "all": 1,
        },
    ),
    "merge": ({"merge": {"tolerance": 0.002}}, {"merge": 1, "merge_summary": 1, "all": 1}),
    "merge policy": ({"merge": {"runs": "all"}}, {"merge": 1, "merge_summary": 1, "all": 1}),  # the other run
    "table": (
        {"table": {"best_metric": "bleu"}},
        {"table": 1, "report_figures": 1, "choice_figure": 1, "merge_summary": 1, "all": 1},
    ),
    "report": ({"evaluate": {"samples_in_report": 3}}, {"report_figures": 1, "all": 1}),
    # the forgetting-aware choice: the table chooses again, nothing is trained or evaluated again
    "table choice": (
        {"table": {"select": "pareto", "retention_floor": 50}},
        {"table": 1, "report_figures": 1, "choice_figure": 1, "merge_summary": 1, "all": 1},
    ),
    # replay: the replay data once, then every point trains again (not the data stages, not the pre-flight)
    "replay": ({"train": {"replay": 0.25}}, {"replay_data": 1, **DOWNSTREAM_OF_TRAIN}),
    "rank analysis": (
        {"rank_analysis": {"energies": [0.5, 0.9]}},
        {"rank_analysis": 2, "table": 1, "report_figures": 1, "choice_figure": 1, "merge_summary": 1, "all": 1},
    ),
    # a new grid point: one pre-flight job checks it (not the finished points), only the new point trains
    "grid point added": (
        {"grid": {"r": [2, 4, 8]}},
        {
            "preflight": 1,
            "preflight_table": 1,
            "train": 1,
            "evaluate": 1,
            "rank_analysis": 1,
            "table": 1,
            "report_figures": 1,
            "choice_figure": 1,
            "merge_summary": 1,
            "all": 1,
        },
    ),
    # the data: everything downstream of cleaning (not the base model, not the pre-flight)
    "data": (
        {"clean": {"min_answer_chars": 3}},
        {"clean": 1, "format": 1, "split": 1, "tokenize": 1, "evaluate_base": 1, **DOWNSTREAM_OF_TRAIN},
    ),
}


def merged_config(base: dict, change: dict) -> dict:
    out = {**base}
    for key, value in change.items():
        out[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return out


@pytest.fixture(scope="module")
def finished_copy(finished_run, tmp_path_factory) -> Path:
    """A copy of the finished tiny sweep whose config the rerun-scope cases change (other tests read the
    original meanwhile)."""
    import shutil

    workdir = tmp_path_factory.mktemp("rerun_scope") / "wf"
    shutil.copytree(finished_run[0], workdir, symlinks=True)
    return workdir


@pytest.mark.parametrize("key_class", list(RERUN_SCOPE))
def test_rerun_scope(finished_copy, tiny_model, key_class):
    workdir = finished_copy
    change, expected = RERUN_SCOPE[key_class]
    write_config(workdir, merged_config(tiny_config(tiny_model), change))
    try:
        assert planned_jobs(workdir) == expected
    finally:
        write_config(workdir, tiny_config(tiny_model))


def test_no_rule_spreads_a_config_section_into_params():
    """Params are named one by one (a spread would let a new or result-neutral key rerun jobs)."""
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        assert "**config[" not in smk.read_text(), f"{smk.name} spreads a config section into params"


def test_bad_config_fails_before_any_job(tmp_path, tiny_model):
    config = tiny_config(tiny_model)
    config["train"]["learnig_rate"] = 0.1
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "learnig_rate" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_target_module_stops_before_training(tmp_path, tiny_model):
    config = tiny_config(tiny_model)
    config["grid"]["target_modules"] = ["qv", ["q_proj", "c_attn"]]
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    log = (tmp_path / "results" / "logs" / "preflight.log").read_text()
    assert "pre-flight: 2 of 4 grid point(s) cannot be trained, so no training starts" in log
    for run in ("r2_a8_q-c_attn", "r4_a8_q-c_attn"):  # every bad point is named, with the model's linear layers
        assert (
            f"{run}: grid.target_modules: c_attn not found in LlamaForCausalLM; its linear layers are: down_proj, "
            "gate_proj" in log
        )
    assert not list((tmp_path / "results").glob("runs/*/train_stats.json"))  # no training started
    assert not list((tmp_path / "results").glob("runs/*/preflight.json"))  # nothing half-checked is kept


def test_two_runs_in_parallel_give_identical_results(finished_run, tiny_model, tmp_path):
    """A second complete run, with --cores 2 and no gpu limit (two grid points at once), reproduces
    the first (--cores 1) exactly: split files, adapters and the table (timing columns aside)."""
    first, _ = finished_run
    write_config(tmp_path, tiny_config(tiny_model))
    snakemake(tmp_path, "--cores", "2")
    assert_same_results(first, tmp_path)


def test_keep_going_tabulates_the_other_runs_and_lists_the_failure(finished_run, tiny_model, tmp_path):
    """A grid point that fails at run time (here: its adapter file is damaged, then evaluation is
    redone) does not stop the others under --keep-going; the partial table lists it with its error."""
    import shutil

    first, _ = finished_run
    shutil.copytree(first, tmp_path, dirs_exist_ok=True)
    (tmp_path / "results/runs/r4_a8_qv/adapter/adapter_model.safetensors").write_bytes(b"not a safetensors file")
    proc = snakemake(
        tmp_path, "--cores", "1", "--resources", "gpu=1", "--keep-going", "--forcerun", "evaluate", check=False
    )
    assert proc.returncode != 0
    table = pd.read_csv(tmp_path / "results/comparison.csv")
    assert table[table["status"] == "ok"]["run"].tolist() == ["base", "r2_a8_qv"]
    failed = table.set_index("run").loc["r4_a8_qv", "status"]
    assert failed.startswith("FAILED in evaluate") and "r4_a8_qv" not in table[table["status"] == "ok"]["run"].tolist()
    assert "1 run(s) did not finish" in (tmp_path / "results/comparison.md").read_text()


def test_a_combination_reuses_trained_adapters_and_gets_a_row(finished_run, tiny_model, tmp_path):
    """Adding a `combine` entry to a finished sweep trains nothing: it combines, evaluates, merges and
    analyses the combination, and the table gets its row (merge.runs: all, so the combination is merged)."""
    import shutil

    first, _ = finished_run
    shutil.copytree(first, tmp_path, dirs_exist_ok=True)
    cfg = tiny_config(tiny_model)
    cfg["combine"] = [{"name": "mix", "adapters": ["r2_a8_qv", "r4_a8_qv"], "weights": [0.5, 0.5]}]
    cfg["merge"] = {"runs": "all"}
    write_config(tmp_path, cfg)
    jobs = planned_jobs(tmp_path)
    assert "train" not in jobs and "preflight" not in jobs
    assert {k: jobs.get(k) for k in ("combine", "evaluate", "rank_analysis", "table")} == dict.fromkeys(
        ("combine", "evaluate", "rank_analysis", "table"), 1
    )
    assert jobs["merge"] == 2  # the combination and the run that was not the best
    snakemake(tmp_path, "--cores", "1", "--resources", "gpu=1")
    table = pd.read_csv(tmp_path / "results/comparison.csv").set_index("run")
    assert list(table.index) == ["base", "r2_a8_qv", "r4_a8_qv", "mix"]
    assert table.loc["mix", "method"] == "combine"
    assert table.loc["mix", "targets"] == "r2_a8_qv+r4_a8_qv" and table.loc["mix", "eff_rank"] <= 6
    merges = pd.read_csv(tmp_path / "results/merges.csv").set_index("run")
    assert sorted(merges.index) == ["mix", "r2_a8_qv", "r4_a8_qv"] and merges["passed"].all()
