"""Live sweep status: the train stage's progress line and progress.json, and `loraflow status`."""

import json
import os
import time

from loraflow.cli import main
from loraflow.status import status_lines
from loraflow.train.progress import Progress, duration


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_is_due_at_the_first_step_every_interval_and_the_last(tmp_path):
    clock = Clock()
    progress = Progress(str(tmp_path / "progress.json"), total_steps=10, interval_s=30, clock=clock)
    lines = []
    for step in range(1, 11):
        clock.t = step * 12.0  # a step every 12 s: due at steps 1, 4 (48 s), 7 (84 s) and the last
        lines.append(progress.update(step, tokens_seen=step * 100, train_s=step * 10.0, eval_s=step * 2.0))
    assert [i + 1 for i, line in enumerate(lines) if line] == [1, 4, 7, 10]
    assert lines[3] == "progress: step 4/10 (40 %), 10 tokens/s, elapsed 48s, ETA 1m12s"
    figures = json.loads((tmp_path / "progress.json").read_text())
    assert figures["step"] == 10 and figures["eta_s"] == 0 and figures["percent"] == 100


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0, 45, 248, 3720)] == ["0s", "45s", "4m08s", "1h02m"]


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if isinstance(obj, dict) else obj)


def sweep(tmp_path, now):
    """A results directory with one run in each state."""
    res = tmp_path / "results"
    for run in ("a_done", "b_eval", "c_train", "d_planned", "e_failed", "f_trained"):
        write(res / "runs" / run / "preflight.json", {})
    write(res / "runs" / "a_done" / "train_stats.json", {"train_time_s": 100.0, "eval_time_s": 20.0})
    write(res / "runs" / "a_done" / "eval.json", {})
    write(res / "benchmarks" / "evaluate" / "a_done.tsv", "s\th:m:s\n30.0\t0:00:30\n")
    write(res / "runs" / "b_eval" / "train_stats.json", {})
    write(res / "logs" / "evaluate" / "b_eval.log", "INFO job started\n")
    os.utime(res / "runs" / "b_eval" / "train_stats.json", (now - 60, now - 60))
    write(res / "logs" / "train" / "c_train.log", "INFO progress: step 3/10\n")
    write(
        res / "runs" / "c_train" / "progress.json",
        {
            "step": 3,
            "total_steps": 10,
            "percent": 30.0,
            "tokens_per_s": 350.0,
            "elapsed_s": 30.0,
            "eta_s": 70.0,
            "updated": now - 5,
        },
    )
    write(res / "logs" / "train" / "e_failed.log", "INFO job started\nloraflow error: CUDA out of memory\n")
    write(res / "runs" / "f_trained" / "train_stats.json", {})
    return res


def test_status_names_every_runs_state_and_the_sweeps_eta(tmp_path):
    now = time.time()
    lines = status_lines(str(sweep(tmp_path, now)), now=now)
    by_run = {line.split()[0]: line for line in lines[:-1]}
    assert by_run["a_done"].split()[1] == "done"
    assert by_run["b_eval"].split()[1] == "evaluating"
    assert by_run["c_train"].endswith("training 30 % (step 3/10, 350 tokens/s, ETA 1m10s)")
    assert by_run["d_planned"].split()[1] == "planned"
    assert by_run["e_failed"].endswith("failed in train: loraflow error: CUDA out of memory")
    assert by_run["f_trained"].endswith("trained waiting for evaluation")
    # the running run's 70 s plus one planned run at the finished run's 100 + 20 + 30 s
    assert lines[-1] == "sweep: 1 done, 1 training, 1 trained, 1 evaluating, 1 planned, 1 failed; ETA 3m40s"


def test_a_run_whose_progress_stopped_is_flagged(tmp_path):
    now = time.time()
    res = sweep(tmp_path, now)
    progress = json.loads((res / "runs" / "c_train" / "progress.json").read_text())
    write(res / "runs" / "c_train" / "progress.json", {**progress, "updated": now - 600})
    line = next(line for line in status_lines(str(res), now=now) if line.startswith("c_train"))
    assert line.endswith("no update for 10m00s)")


def test_status_command(tmp_path, capsys):
    assert main(["status", str(sweep(tmp_path, time.time()))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 7 and out[-1].startswith("sweep: 1 done")
    assert main(["status", str(tmp_path / "nowhere")]) == 1
    assert "no such results directory" in capsys.readouterr().err


def test_a_run_logging_steps_between_progress_updates_is_training_and_an_old_error_is_not_its_state(tmp_path):
    """The train log is newer than progress.json between two updates: still training. An error of an
    earlier attempt of the job (before its latest `job started`) does not make the new attempt failed."""
    now = time.time()
    res = sweep(tmp_path, now)
    log = res / "logs" / "train" / "c_train.log"
    log.write_text(
        "INFO job started\nloraflow error: CUDA out of memory\nINFO job started\nINFO step 4/10 train_loss 1.0\n"
    )
    os.utime(res / "runs" / "c_train" / "progress.json", (now - 20, now - 20))
    os.utime(log, (now, now))
    line = next(line for line in status_lines(str(res), now=now) if line.startswith("c_train"))
    assert "training 30 % (step 3/10" in line
