"""The optional lm-eval-harness stage, offline, on the tiny model with a local task file."""

from __future__ import annotations

import json

import pytest

from loraflow.io import read_json

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is an optional extra (pip install 'loraflow[lm-eval]')")


def test_lm_eval_local_task_on_the_tiny_model(tiny_model, tmp_path, monkeypatch):
    from loraflow.evaluate.harness import lm_eval_columns, run_lm_eval
    from loraflow.evaluate.settings import LmEvalSettings

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "mc.jsonl"
    rows = [
        {"question": f"What is {a} plus {b}?", "choices": [str(a + b), str(a + b + 1), str(a * b)], "answer": 0}
        for a, b in ((2, 3), (4, 5), (6, 7), (1, 8), (3, 3), (2, 9))
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "local_mc.yaml").write_text(
        "task: loraflow_local_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    settings = LmEvalSettings(tasks=["loraflow_local_mc"], include_path=str(tasks), batch_size=4, limit=4)
    out = run_lm_eval(str(tiny_model), str(tmp_path / "lm_eval.json"), settings, threads=1)
    assert read_json(tmp_path / "lm_eval.json") == out
    acc = out["tasks"]["loraflow_local_mc"]["acc"]
    assert acc in (0.0, 0.25, 0.5, 0.75, 1.0)  # 4 questions scored
    assert lm_eval_columns(out)["lm_loraflow_local_mc_acc"] == pytest.approx(100 * acc)
