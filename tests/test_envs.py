"""The conda environments of the rules (workflow/envs/*.yaml, for `snakemake --sdm conda`) install loraflow
from $LORAFLOW_URL, not from a path relative to the file, so they work wherever the workflow is read from
(a clone or a Snakemake module from a remote source). Conda hands the pip section to pip as a requirements
file, and pip expands ${...} there: the same is done here, against this checkout."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from packaging.requirements import Requirement

from helpers import REPO

ENVS = sorted((REPO / "workflow" / "envs").glob("*.yaml"))
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def pip_lines(env_file) -> list[str]:
    env = yaml.safe_load(env_file.read_text())
    return [line for dep in env["dependencies"] if isinstance(dep, dict) for line in dep["pip"]]


def test_every_env_a_rule_names_exists():
    named = {m for f in RULE_FILES for m in re.findall(r"envs/(\w+\.yaml)", f.read_text())}
    assert named and named <= {e.name for e in ENVS}


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_installs_loraflow_from_loraflow_url_with_extras_it_has(env_file):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lines = pip_lines(env_file)
    assert not [line for line in lines if line.startswith("-e") or "../" in line]  # nothing relative to the file
    loraflow = [Requirement(line) for line in lines if line.startswith("loraflow")]
    assert len(loraflow) == 1 and loraflow[0].url == "${LORAFLOW_URL}" and loraflow[0].extras <= set(extras)


def test_pip_expands_loraflow_url_to_this_checkout(tmp_path):
    """What conda runs for tracking.yaml's pip section, as a dry run of pip on its requirements file."""
    (tmp_path / "requirements.txt").write_text(
        "\n".join(pip_lines(REPO / "workflow" / "envs" / "tracking.yaml")) + "\n"
    )
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--report",
            str(report),
            "-r",
            str(tmp_path / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "LORAFLOW_URL": REPO.as_uri()},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [install] = json.loads(report.read_text())["install"]
    assert install["metadata"]["name"] == "loraflow" and install["download_info"]["url"] == REPO.as_uri()
    assert install["requested_extras"] == ["tracking"]
