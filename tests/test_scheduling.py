"""Snakemake honours `--cores` and `--resources gpu=N`: toy workflows with the shape that broke it.

Snakemake 9.10-9.16's scheduler over-schedules after an upstream job that held the resource finishes
(snakemake issue #3913): two `gpu=1` jobs that become ready together start together, even under
`--cores 1 --resources gpu=1`. loraflow's model jobs have exactly this shape (train -> evaluate and
merge of the same run), so two models would share one GPU. These tests fail on such a version.
"""

import subprocess
import sys
from pathlib import Path

from helpers import REPO

# One upstream job holding the resources, then two jobs that all become ready when it finishes.
# Each job records when it ran (wall clock, from inside the job).
TOY = """
rule all:
    input: expand("out/{{i}}.txt", i=range(2))

rule upstream:
    output: "common"
    threads: {threads}
    resources: gpu={gpu}
    shell: "sleep 0.3; touch {{output}}"

rule model:
    input: "common"
    output: "out/{{i}}.txt"
    threads: {threads}
    resources: gpu={gpu}
    shell: "date +%s.%N > {{output}}; sleep 1; date +%s.%N >> {{output}}"
"""


def run_toy(tmp_path: Path, *args: str, threads: int = 1, gpu: int = 1) -> list[tuple[float, float]]:
    (tmp_path / "Snakefile").write_text(TOY.format(threads=threads, gpu=gpu))
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted(tuple(float(t) for t in p.read_text().split()) for p in (tmp_path / "out").glob("*.txt"))


def overlapping(intervals: list[tuple[float, float]]) -> list[tuple]:
    return [(a, b) for i, a in enumerate(intervals) for b in intervals[i + 1 :] if a[0] < b[1] and b[0] < a[1]]


def test_gpu_jobs_that_become_ready_together_never_overlap(tmp_path):
    intervals = run_toy(tmp_path, "--cores", "2", "--resources", "gpu=1")
    assert len(intervals) == 2
    assert not overlapping(intervals), (
        f"two gpu=1 jobs ran at once under --cores 2 --resources gpu=1: {overlapping(intervals)}"
    )


def test_jobs_using_all_cores_never_overlap(tmp_path):
    """The same shape with threads instead of a GPU: two 2-thread jobs never share --cores 2."""
    intervals = run_toy(tmp_path, "--cores", "2", threads=2, gpu=0)
    assert not overlapping(intervals), f"two 2-thread jobs ran at once under --cores 2: {overlapping(intervals)}"


def test_installed_snakemake_is_within_the_declared_bounds():
    """pyproject.toml excludes the versions with the scheduler bug; the installed one must satisfy it."""
    import tomllib

    from packaging.requirements import Requirement
    from snakemake import __version__

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(Requirement(d) for d in deps if Requirement(d).name == "snakemake")
    assert spec.specifier.contains(__version__), f"snakemake {__version__} is outside {spec}"
    assert not spec.specifier.contains("9.16.3") and not spec.specifier.contains(
        "9.10.0"
    )  # the broken range stays excluded
