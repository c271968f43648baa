"""Experiment tracking against the real thing: a `mlflow server` started here on localhost (read back with
MlflowClient) and TensorBoard event files read back with tensorboard's own event reader."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraflow.tracking import track
from loraflow.tracking.records import read_curves, read_sweep
from loraflow.tracking.tensorboard_events import write_events

SERVER_START_S = 180  # a cold start on a busy machine (database tables, web app); never waited on past this


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free localhost port with a fresh SQLite store: its URI. Always stopped."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers to start
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}): {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server not up after {SERVER_START_S} s: {(root / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.25)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the web workers it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def sweep_runs(uri: str, experiment: str) -> tuple[object, dict[str, object]]:
    """(the sweep's parent run, {name: child run}) of the active runs; fails on a duplicate name."""
    c = client(uri)
    runs = c.search_runs([c.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("loraflow.role") == "sweep"]
    assert len(parents) == 1
    children = [r for r in runs if r is not parents[0]]
    names = [r.info.run_name for r in children]
    assert len(names) == len(set(names)), f"duplicate runs: {names}"
    return parents[0], {r.info.run_name: r for r in children}


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


# A results directory as the workflow writes it, built here: train logs, stats and the comparison table.
def train_log(losses: list[float], evals: dict[int, float]) -> pd.DataFrame:
    steps = range(1, len(losses) + 1)
    return pd.DataFrame(
        {
            "step": steps,
            "epoch": 1,
            "train_loss": losses,
            "eval_loss": [evals.get(s) for s in steps],
            "lr": [0.01 * (1 - s / len(losses)) for s in steps],
            "tokens_seen": [500 * s for s in steps],
            "elapsed_s": [2.0 * s for s in steps],
        }
    )


def write_results(res: Path, logs: dict[str, pd.DataFrame], best: str) -> dict[str, dict]:
    """Results of a sweep of `logs`' runs; returns the points ({run: settings}) as the workflow passes them."""
    rows = [{"run": "base", "status": "ok", "test_loss": 7.0, "test_loss_lo": 6.9, "test_loss_hi": 7.1}]
    points = {}
    for i, (name, log) in enumerate(logs.items()):
        run_dir = res / "runs" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        log.to_csv(run_dir / "train_log.csv", index=False)
        (run_dir / "train_stats.json").write_text(
            json.dumps(
                {"steps": len(log), "tokens_per_s": 250.0, "peak_memory_mb": 512.5, "train_time_s": 2.0 * len(log)}
            )
        )
        loss = float(log["train_loss"].iloc[-1])
        rows.append(
            {
                "run": name,
                "best": "best (rougeL)" if name == best else None,
                "tied": None,
                "status": "ok",
                "r": 2 ** (i + 1),
                "alpha_over_r": 2.0,
                "val_loss": loss,
                "test_loss": loss + 0.1,
                "test_loss_lo": loss,
                "test_loss_hi": loss + 0.2,
                "retention": 0.9,
                "train_time_s": 2.0 * len(log),
                "peak_memory_mb": 512.5,
            }
        )
        points[name] = {
            "method": "lora",
            "r": 2 ** (i + 1),
            "lora_alpha": 8,
            "target_modules": ["q_proj", "v_proj"],
            "learning_rate": 0.01,
        }
    pd.DataFrame(rows).to_csv(res / "comparison.csv", index=False)
    (res / "comparison.md").write_text("# LoRA comparison\n", encoding="utf-8")
    return points


LOGS = {
    "r2_a8_qv": train_log([3.0, 2.5, 2.25, 2.0], {2: 2.75, 4: 2.5}),
    "r4_a8_qv": train_log([3.0, 2.0, 1.5, 1.25], {2: 2.5, 4: 2.0}),
}


def settings_for(uri: str, experiment: str) -> dict:
    return {"mlflow": True, "tensorboard": True, "uri": uri, "experiment": experiment}


def test_each_point_is_one_run_under_the_sweep_run_and_mirroring_again_adds_none(tmp_path, mlflow_server):
    res = tmp_path / "results"
    points = write_results(res, LOGS, best="r4_a8_qv")
    card = res / "adapters" / "r4_a8_qv" / "README.md"
    card.parent.mkdir(parents=True)
    card.write_text("---\nbase_model: tiny\n---\n# r4_a8_qv\n", encoding="utf-8")
    status = track(
        str(res / "comparison.csv"), str(tmp_path / "status.json"), points, settings_for(mlflow_server, "first")
    )
    assert status["mlflow"]["runs"] == {"base": "created", "r2_a8_qv": "created", "r4_a8_qv": "created"}
    parent, runs = sweep_runs(mlflow_server, "first")
    assert sorted(runs) == ["base", "r2_a8_qv", "r4_a8_qv"] and parent.info.run_name == str(res)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parent.info.run_id}
    base = runs.pop("base")  # the baseline row, beside the runs to compare against
    assert base.data.metrics["test_loss_lo"] == 6.9 and base.data.tags["baseline"] == "true" and not base.data.params
    for name, log in LOGS.items():
        run = runs[name]
        assert (
            run.data.params["r"] == str(points[name]["r"])
            and run.data.params["target_modules"] == '["q_proj", "v_proj"]'
        )
        assert run.data.params["alpha_over_r"] == "2.0"
        assert history(mlflow_server, run.info.run_id, "loss/train") == list(zip(log["step"], log["train_loss"]))
        assert history(mlflow_server, run.info.run_id, "loss/val") == [
            (2, log["eval_loss"][1]),
            (4, log["eval_loss"][3]),
        ]
        assert [s for s, _ in history(mlflow_server, run.info.run_id, "lr")] == [1, 2, 3, 4]
        assert history(mlflow_server, run.info.run_id, "tokens_per_s") == [(s, 250.0) for s in (1, 2, 3, 4)]
        final = float(log["train_loss"].iloc[-1])
        assert (run.data.metrics["test_loss_lo"], run.data.metrics["test_loss_hi"]) == (final, final + 0.2)
        assert run.data.metrics["retention"] == 0.9 and run.data.metrics["stats/peak_memory_mb"] == 512.5
        assert run.data.tags["status"] == "ok" and run.data.tags["pruned"] == run.data.tags["baseline"] == "false"
        assert run.info.status == "FINISHED"
        assert run.data.tags["best"] == str(name == "r4_a8_qv").lower()
        # its time in the run list is its training's: ending as its train log was written
        assert run.info.end_time == int(1000 * (res / "runs" / name / "train_log.csv").stat().st_mtime)
        assert run.info.end_time - run.info.start_time == pytest.approx(1000 * 2.0 * len(log), abs=2)
    artifacts = {
        name: {f.path for f in client(mlflow_server).list_artifacts(r.info.run_id)} for name, r in runs.items()
    }
    assert artifacts == {"r2_a8_qv": {"train_log.csv"}, "r4_a8_qv": {"train_log.csv", "README.md"}}
    assert {f.path for f in client(mlflow_server).list_artifacts(parent.info.run_id)} == {
        "comparison.md",
        "comparison.csv",
    }

    again = track(
        str(res / "comparison.csv"), str(tmp_path / "status.json"), points, settings_for(mlflow_server, "first")
    )
    assert again["mlflow"]["runs"] == {"base": "unchanged", "r2_a8_qv": "unchanged", "r4_a8_qv": "unchanged"}
    parent2, runs2 = sweep_runs(mlflow_server, "first")
    assert parent2.info.run_id == parent.info.run_id
    assert {n: r.info.run_id for n, r in runs2.items()} == {n: r.info.run_id for n, r in {**runs, "base": base}.items()}


def test_a_new_best_updates_the_same_run_and_a_retrained_run_replaces_its_curves(tmp_path, mlflow_server):
    res = tmp_path / "results"
    points = write_results(res, LOGS, best="r2_a8_qv")
    out, cfg = str(tmp_path / "status.json"), settings_for(mlflow_server, "rerun")
    track(str(res / "comparison.csv"), out, points, cfg)
    _, before = sweep_runs(mlflow_server, "rerun")
    # the table changed its mind (another bootstrap, another metric): tags and figures, not training
    write_results(res, LOGS, best="r4_a8_qv")
    assert track(str(res / "comparison.csv"), out, points, cfg)["mlflow"]["runs"] == {
        "base": "unchanged",
        "r2_a8_qv": "updated",
        "r4_a8_qv": "updated",
    }
    _, after = sweep_runs(mlflow_server, "rerun")
    assert {n: r.info.run_id for n, r in after.items()} == {n: r.info.run_id for n, r in before.items()}
    assert (after["r2_a8_qv"].data.tags["best"], after["r4_a8_qv"].data.tags["best"]) == ("false", "true")
    # r2 trained again (e.g. more steps): one run of that name, with the new curve only; r4 untouched
    retrained = {**LOGS, "r2_a8_qv": train_log([3.0, 2.0, 1.0, 0.5, 0.25, 0.125], {3: 1.5, 6: 0.5})}
    write_results(res, retrained, best="r4_a8_qv")
    assert track(str(res / "comparison.csv"), out, points, cfg)["mlflow"]["runs"] == {
        "base": "unchanged",
        "r2_a8_qv": "replaced",
        "r4_a8_qv": "unchanged",
    }
    _, last = sweep_runs(mlflow_server, "rerun")
    assert last["r4_a8_qv"].info.run_id == before["r4_a8_qv"].info.run_id
    log = retrained["r2_a8_qv"]
    assert history(mlflow_server, last["r2_a8_qv"].info.run_id, "loss/train") == list(
        zip(log["step"], log["train_loss"])
    )


def test_a_tracker_that_fails_warns_once_and_the_results_stay_as_they_are(tmp_path, caplog, monkeypatch):
    """Server down (nothing listens on the port), then mlflow not installed: one warning each, status
    written, TensorBoard still mirrored, no results file touched."""
    res = tmp_path / "results"
    points = write_results(res, LOGS, best="r2_a8_qv")
    before = {p: p.read_bytes() for p in res.rglob("*") if p.is_file()}
    out = tmp_path / "tracking.json"
    caplog.set_level(logging.INFO, logger="loraflow")
    start = time.monotonic()
    status = track(
        str(res / "comparison.csv"), str(out), points, settings_for(f"http://127.0.0.1:{free_port()}", "down")
    )
    assert time.monotonic() - start < 60  # fails fast instead of retrying for minutes
    assert status["mlflow"]["state"] == "failed" and status["tensorboard"]["state"] == "ok"
    assert json.loads(out.read_text()) == status
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("loraflow")]
    assert len(warnings) == 1 and "mlflow was not updated" in warnings[0].getMessage()
    assert {p: p.read_bytes() for p in before} == before  # the results files are unchanged
    caplog.clear()
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    status = track(str(res / "comparison.csv"), str(out), points, settings_for("", "missing"))
    assert status["mlflow"]["state"] == "failed" and "ModuleNotFoundError" in status["mlflow"]["error"]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert not (res / "mlflow.db").exists()


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


floats32 = st.floats(0, 1e4, width=32, allow_subnormal=False)


@st.composite
def train_logs(draw) -> pd.DataFrame:
    """A train_log.csv: any length, validation on any steps, losses and rates as float32 (TensorBoard's)."""
    n = draw(st.integers(1, 30))
    evals = draw(st.dictionaries(st.integers(1, n), floats32, max_size=n))
    log = train_log(draw(st.lists(floats32, min_size=n, max_size=n)), evals)
    log["lr"] = draw(st.lists(floats32, min_size=n, max_size=n))
    log["tokens_seen"] = pd.Series(draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n))).cumsum()
    return log


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=train_logs())
def test_tensorboard_files_read_back_as_the_train_log(tmp_path_factory, log):
    res = tmp_path_factory.mktemp("tb") / "results"
    points = write_results(res, {"r8_a16_qv": log}, best="r8_a16_qv")
    base, record = read_sweep(res / "comparison.csv", points)
    assert not write_events(res, base)  # a baseline has no curves
    assert write_events(res, record)
    tb = res / "runs" / "r8_a16_qv" / "tb"
    got = scalars(tb)
    assert got["loss/train"] == list(zip(log["step"], log["train_loss"]))
    assert got["lr"] == list(zip(log["step"], log["lr"]))
    assert got.get("loss/val", []) == [(s, v) for s, v in zip(log["step"], log["eval_loss"]) if pd.notna(v)]
    speeds = (log["tokens_seen"].diff().fillna(log["tokens_seen"]) / 2.0).tolist()  # elapsed_s: 2 s per step
    assert [s for s, _ in got["tokens_per_s"]] == list(log["step"])
    assert [v for _, v in got["tokens_per_s"]] == pytest.approx(speeds, rel=1e-6)
    assert not write_events(res, record)  # unchanged: left alone
    retrained = train_log([5.0], {})
    write_results(res, {"r8_a16_qv": retrained}, best="r8_a16_qv")
    _, record = read_sweep(res / "comparison.csv", points)
    assert write_events(res, record)
    assert scalars(tb)["loss/train"] == [(1, 5.0)] and len(list(tb.glob("events.out.tfevents.*"))) == 1


def test_read_curves_names_the_validation_columns_of_every_task(tmp_path):
    path = tmp_path / "train_log.csv"
    path.write_text(
        "step,epoch,train_loss,val_loss,val_accuracy,lr,tokens_seen,elapsed_s\n1,1,0.7,0.6,0.5,0.001,10,1.0\n"
    )
    assert read_curves(path) == {
        "loss/train": [(1, 0.7)],
        "loss/val": [(1, 0.6)],
        "val/accuracy": [(1, 0.5)],
        "lr": [(1, 0.001)],
        "tokens_per_s": [(1, 10.0)],
    }


@pytest.mark.slow
def test_the_workflow_mirrors_a_finished_sweep_and_plans_nothing_more(finished_run, tmp_path, mlflow_server):
    """On a copy of the tiny sweep: switching tracking on plans only `track`; the runs arrive with the train
    job's settings and curves; mirroring again adds no run; switching it off plans nothing."""
    import yaml

    from helpers import planned_jobs, snakemake, write_config

    workdir = tmp_path / "wf"
    shutil.copytree(finished_run[0], workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    write_config(workdir, {**config, "tracking": settings_for(mlflow_server, "workflow")})
    assert planned_jobs(workdir) == {"track": 1, "all": 1}
    snakemake(workdir, "--cores", "1", "--resources", "gpu=1")
    res = workdir / "results"
    status = json.loads((res / "tracking.json").read_text())
    assert status["mlflow"]["runs"] == {"base": "created", "r2_a8_qv": "created", "r4_a8_qv": "created"}, status
    parent, runs = sweep_runs(mlflow_server, "workflow")
    assert sorted(runs) == ["base", "r2_a8_qv", "r4_a8_qv"] and parent.info.run_name == "results"
    runs.pop("base")
    table = pd.read_csv(res / "comparison.csv").set_index("run")
    for name, run in runs.items():
        log = pd.read_csv(res / "runs" / name / "train_log.csv")
        assert run.data.params["r"] == str(int(table.loc[name, "r"])) and run.data.params["warmup_steps"] == "0"
        assert [s for s, _ in history(mlflow_server, run.info.run_id, "loss/train")] == list(log["step"])
        assert run.data.metrics["test_loss_hi"] == pytest.approx(table.loc[name, "test_loss_hi"])
        assert run.data.tags["tied"] == str(pd.notna(table.loc[name, "tied"])).lower()
        assert [s for s, _ in scalars(res / "runs" / name / "tb")["loss/train"]] == list(log["step"])
    snakemake(workdir, "--cores", "1", "--forcerun", "track")
    assert set(json.loads((res / "tracking.json").read_text())["mlflow"]["runs"].values()) == {"unchanged"}
    again = sweep_runs(mlflow_server, "workflow")[1]
    assert len(again) == 3 and {n: again[n].info.run_id for n in runs} == {n: r.info.run_id for n, r in runs.items()}
    write_config(workdir, config)
    assert planned_jobs(workdir) == {}
