"""The habits of a kept project, checked with the suite: lint and format (ruff, snakefmt), the workflow's own
lint, and types (mypy on src/). Their settings live in pyproject.toml, so an editor runs the same checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

BIN = Path(sys.executable).parent
PYTHON_TREES = ["src", "tests", "benchmarks", "scripts", "workflow/scripts"]


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "cmd",
    [
        ("ruff", "check", *PYTHON_TREES),
        ("ruff", "format", "--check", *PYTHON_TREES),
        ("snakefmt", "--check", "Snakefile", "workflow"),
        ("mypy",),
    ],
    ids=["ruff-check", "ruff-format", "snakefmt", "mypy"],
)
def test_tool_passes(cmd):
    proc = run(str(BIN / cmd[0]), *cmd[1:])
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize(
    "configfile",
    ["config.yaml", ".test/config/config.yaml", "config/examples/seq_cls.yaml", "config/examples/learn_and_keep.yaml"],
)
def test_workflow_lint_is_clean(configfile):
    proc = run(str(BIN / "snakemake"), "--lint", "-s", "Snakefile", "--configfile", configfile)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in output, proc.stdout[-6000:] + proc.stderr[-3000:]
