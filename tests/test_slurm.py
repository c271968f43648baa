"""The Slurm profile on a real single-node Slurm (slurm-wlm + munge on localhost).

Runs where Slurm is installed or can be (root with apt-get, as in CI); the cluster is started by
scripts/slurm/local_cluster.sh and every daemon is stopped by pid afterwards. The cluster has no
accounting daemon, so the executor checks job status with squeue (MinJobAge keeps finished jobs).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import (
    REPO,
    assert_same_results,
    cut_history,
    halving_config,
    planned_resources,
    tiny_config,
    write_config,
)

CAN_RUN = bool(shutil.which("slurmctld")) or (os.geteuid() == 0 and bool(shutil.which("apt-get")))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CAN_RUN, reason="needs Slurm installed, or root with apt-get to install it"),
]
SCRIPT = REPO / "scripts" / "slurm" / "local_cluster.sh"
MODEL_RULES = ("base_model", "train", "evaluate_base", "evaluate", "merge", "tokenize", "preflight", "halving_rung")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm")
    subprocess.run(["bash", str(SCRIPT), "start", str(d)], check=True, timeout=900)
    try:
        yield {**os.environ, "SLURM_CONF": str(d / "slurm.conf"), "PYTHONPATH": str(REPO / "src")}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(d)], check=False, timeout=120)
        pids = [p for p in (d / f"{n}.pid" for n in ("munged", "slurmctld", "slurmd")) if p.exists()]
        assert not pids, f"daemons left running: {pids}"


@pytest.fixture(scope="module")
def slurm_run(cluster, tiny_model, tmp_path_factory, request) -> tuple[Path, subprocess.CompletedProcess]:
    """The halving sweep (helpers.halving_config) run to its end through the cluster: (workdir,
    CompletedProcess). One sweep covers every kind of job the profile submits: the data and model stages,
    the halving rungs behind a checkpoint, the survivor's train job, evaluation and the merge. The local run
    it is compared with (conftest's halving_local) and the tiny sweep other modules read (finished_run) are
    built while the cluster sweep runs, where no other test has built them yet: most of a small job's time
    on Slurm is the executor waiting between status checks."""
    workdir = tmp_path_factory.mktemp("slurm_halving") / "wf"
    workdir.mkdir()
    write_config(workdir, halving_config(tiny_model))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    # files, not pipes: a full pipe would stall the sweep while the local runs are built
    with open(workdir.parent / "stdout", "w") as out, open(workdir.parent / "stderr", "w") as err:
        popen = subprocess.Popen([*cmd, *slurm_args()], stdout=out, stderr=err, env=cluster)
    for local in ("halving_local", "finished_run"):  # the waiting above leaves the CPUs to these
        request.getfixturevalue(local)
    popen.wait(timeout=1500)
    out, err = ((workdir.parent / f).read_text() for f in ("stdout", "stderr"))
    assert popen.returncode == 0, out[-3000:] + err[-5000:]
    return workdir, subprocess.CompletedProcess(popen.args, popen.returncode, out, err)


def test_a_sweep_through_slurm_equals_a_local_run(cluster, slurm_run, halving_local):
    """Every model job goes to Slurm and completes, the rules marked local run beside Snakemake, and the
    results equal a local `--cores 1 --resources gpu=1` run of the same sweep: split files, the table (timing
    columns aside) and the survivor's adapter, byte for byte."""
    remote, proc = slurm_run
    out = proc.stdout + proc.stderr
    submitted = [line for line in out.splitlines() if "SLURM jobid" in line]
    assert len(submitted) >= 10, out[-3000:]
    jobs = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i %j %T"], capture_output=True, text=True, env=cluster, check=True
    ).stdout
    states = [line.split()[-1] for line in jobs.splitlines()]
    assert states and set(states) == {"COMPLETED"}, jobs
    logs = list((remote / ".snakemake" / "slurm_logs").rglob("*.log"))
    for rule in ("halving_rung", "train", "evaluate", "merge"):
        assert any(f"rule_{rule}/" in f"{p}/" for p in logs), rule
    local_rules = (
        "split",
        "preflight_table",
        "halving_select",
        "table",
        "merge_summary",
        "report_figures",
        "choice_figure",
    )
    assert not [p for p in logs if any(f"rule_{rule}/" in f"{p}/" for rule in local_rules)]  # run beside Snakemake
    assert (remote / "results" / "merges.csv").exists()  # the whole sweep, merge included
    assert_same_results(halving_local, remote)


def slurm_args() -> list[str]:
    """The profile as users run it; this node has no GPU and little memory, so the per-rule requests are
    scaled down (the GPU mapping itself is checked in test_gpu_resources_become_sbatch_gpus_arguments)."""
    small = [f"{rule}:{k}={v}" for rule in MODEL_RULES for k, v in (("gpu", 0), ("mem_mb", 3000), ("cpus_per_task", 1))]
    return [
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--jobs",
        "2",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--set-resources",
        *small,
    ]


def test_halving_through_slurm_cuts_and_trains_as_a_local_run(slurm_run, halving_local):
    """search.method: halving on the cluster: its rungs run as Slurm jobs and its cuts (checkpoints, local
    rules) keep the same points, with the same validation figures at every rung, and the survivor's adapter
    is byte-identical to the one a local --cores 1 run trains (conftest's halving_local)."""
    local = halving_local
    remote, proc = slurm_run
    assert "halving_rung" in proc.stdout + proc.stderr
    assert cut_history(remote) == cut_history(local)
    kept = cut_history(local)["survivors"]
    for run in kept:
        adapter = f"results/runs/{run}/adapter/adapter_model.safetensors"
        assert (remote / adapter).read_bytes() == (local / adapter).read_bytes()
    trained = sorted(
        p.parent.parent.name for p in (remote / "results" / "runs").glob("*/adapter/adapter_model.safetensors")
    )
    assert trained == kept  # pruned points are never trained to the end on the cluster either


def test_gpu_resources_become_sbatch_gpus_arguments(tiny_model, tmp_path):
    """The rules' own gpu resource reaches sbatch through the profile: --gpus=1 per model job and
    --gpus=N for a train job of train.nproc_per_node N processes (the profile sets no gpu of its own)."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Job:
        def __init__(self, **resources):
            self.resources = _Resources(resources)

    class _Resources(dict):
        def __getattr__(self, key):
            return self[key]

    assert set_gres_string(Job(gpu=1)).strip() == "--gpus=1"
    assert set_gres_string(Job(gpu=2, gpu_model="a100")).strip() == "--gpus=a100:2"
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert not any("gpu" in r for r in profile["set-resources"].values())  # would override nproc_per_node
    config = tiny_config(tiny_model)
    config["train"]["nproc_per_node"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_resources(tmp_path, "--profile", str(REPO / "profiles" / "slurm"))
    assert jobs["train"]["gpu"] == 2 and jobs["evaluate_base"]["gpu"] == 1 and "gpu" not in jobs["preflight"]
    assert set_gres_string(Job(gpu=jobs["train"]["gpu"])).strip() == "--gpus=2"
