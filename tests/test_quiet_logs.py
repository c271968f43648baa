"""A model job's log holds loraflow's own lines: third-party notices that are not the user's business
(bitsandbytes' optional hub kernels, deprecations inside transformers/torch) are silenced where they arise."""

import re

import pytest

pytestmark = pytest.mark.slow


def test_model_job_logs_have_no_warning_lines(finished_run):
    workdir, _ = finished_run
    logs = sorted((workdir / "results" / "logs").glob("**/*.log"))
    assert any("train" in str(p) for p in logs) and any("evaluate" in str(p) for p in logs)
    noisy = [
        f"{p.name}: {line}"
        for p in logs
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines()
        if re.search(r"\bWARNING\b|Warning:|warnings\.warn", line)
    ]
    assert not noisy, "\n".join(noisy[:10])
