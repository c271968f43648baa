"""loraflow as a Snakemake module: another project's Snakefile uses its rules with its own config."""

import re
import subprocess
import sys

import yaml

from helpers import REPO


def test_another_project_uses_loraflow_as_a_module(tmp_path):
    (tmp_path / "Snakefile").write_text(f'''configfile: "project.yaml"


module loraflow:
    snakefile: "{REPO / "workflow" / "Snakefile"}"
    config: config


use rule * from loraflow as lf_*
''')
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    config["grid"]["r"] = [2, 4, 8]  # the project's own sweep: three grid points, not .test's two
    config["results_dir"] = "lf_results"
    (tmp_path / "project.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(tmp_path / "Snakefile"),
            "--directory",
            str(tmp_path),
            "-n",
            "--cores",
            "1",
            "--resources",
            "gpu=1",
            "--",
            "lf_all",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = dict(re.findall(r"^(lf_\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert jobs["lf_train"] == "3" and jobs["lf_evaluate"] == "3" and jobs["lf_table"] == "1" and jobs["lf_all"] == "1"
    assert "lf_results/runs/r8_a8_qv/adapter" in proc.stdout and "results/runs/" not in proc.stdout.replace(
        "lf_results/runs/", ""
    )
