"""The `loraflow` command: init (inspect a data file, write a config), runs, best."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from loraflow.cli import main
from loraflow.config import validate_config
from loraflow.data.clean import clean_rows
from loraflow.data.readers import iter_raw_rows

REPO = Path(__file__).resolve().parents[1]


def test_entry_point_is_declared_and_importable():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["loraflow"].split(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))


def test_init_gbk_semicolon_csv_writes_a_config_that_reads_it(tmp_path, capsys):
    lines = ["department;title;ask;answer"] + [
        f"内科;头晕{i}；怎么办？;我头晕{i}次了，怎么办？;注意休息，按时测量血压（每天两次）。" for i in range(40)
    ]
    data = tmp_path / "med.csv"
    data.write_bytes(("\n".join(lines) + "\n").encode("gbk"))
    out = tmp_path / "med.yaml"
    assert main(["init", str(data), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "csv, encoding gb18030" in printed and "delimiter ';'" in printed and f"wrote {out}" in printed
    config = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert (
        config["data"]["encoding"] == "gb18030"
        and config["data"]["delimiter"] == ";"
        and config["data"]["format"] == "csv"
    )
    assert config["data"]["columns"]["question"] == "ask" and config["data"]["columns"]["answer"] == "answer"
    assert config["data"]["system_prompt"] == "" and config["clean"]["strip_html"] is False
    validate_config(config)  # complete and valid as written
    d = config["data"]
    clean, rejected, stats, changes = clean_rows(
        iter_raw_rows(d["path"], d["format"], d["encoding"], d["delimiter"]), d["path"], d["columns"]
    )
    assert len(clean) == 40 and not rejected and not changes
    assert clean[0]["messages"][1]["content"] == "注意休息，按时测量血压（每天两次）。" and clean[0]["meta"] == {
        "department": "内科",
        "title": "头晕0；怎么办？",
    }


def test_init_sharegpt_classification_and_refusals(tmp_path, capsys):
    sg = tmp_path / "chat.jsonl"
    sg.write_text(
        "".join(
            json.dumps({"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]})
            + "\n"
            for i in range(5)
        )
    )
    out = tmp_path / "c.yaml"
    assert main(["init", str(sg), "-o", str(out)]) == 0
    assert "rows: sharegpt {'sharegpt': 5}" in capsys.readouterr().out
    assert validate_config(yaml.safe_load(out.read_text()))["data"]["path"] == str(sg)
    assert main(["init", str(sg), "-o", str(out)]) == 1  # never overwrites silently
    assert "exists; choose another file with -o" in capsys.readouterr().err
    cls = tmp_path / "sst.jsonl"
    cls.write_text("".join(json.dumps({"text": f"movie {i} is fine", "label": i % 2}) + "\n" for i in range(10)))
    assert main(["init", str(cls), "-o", str(tmp_path / "cls.yaml")]) == 0
    config = yaml.safe_load((tmp_path / "cls.yaml").read_text())
    assert (
        config["task"] == "seq_cls"
        and config["classify"]["data"] == str(cls)
        and config["classify"]["label_column"] == "label"
    )
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"foo": 1, "bar": 2}) + "\n")
    assert main(["init", str(odd), "-o", str(tmp_path / "odd.yaml")]) == 1
    assert "cannot find a prompt and an answer column among foo, bar" in capsys.readouterr().err


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    for run in ("r4_a16_qv", "r16_a32_qv"):
        (r / "runs" / run / "adapter").mkdir(parents=True)
        (r / "runs" / run / "train_stats.json").write_text(json.dumps({"best_eval_loss": 1.25}))
    (r / "runs" / "r16_a32_qv" / "eval.json").write_text(json.dumps({"rougeL": 41.5}))
    (r / "runs" / "r16_a32_qv" / "merge_check.json").write_text(json.dumps({"passed": True}))
    (r / "checkpoints" / "r8_a16_qv").mkdir(parents=True)
    (r / "checkpoints" / "r8_a16_qv" / "state.json").write_text(json.dumps({"step": 20}))
    (r / "logs" / "train").mkdir(parents=True)
    (r / "logs" / "train" / "r32_a16_qv.log").write_text(
        "INFO start\nTraceback (most recent call last):\nRuntimeError: CUDA out of memory\n"
    )
    with open(r / "comparison.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["run", "best", "status", "method", "r", "alpha", "targets", "val_loss", "rougeL"])
        w.writeheader()
        w.writerow({"run": "base", "best": "", "status": "ok", "rougeL": 20.0})
        w.writerow(
            {
                "run": "r4_a16_qv",
                "best": "",
                "status": "ok",
                "method": "lora",
                "r": 4,
                "alpha": 16,
                "targets": "qv",
                "rougeL": 35.0,
            }
        )
        w.writerow(
            {
                "run": "r16_a32_qv",
                "best": "best (rougeL)",
                "status": "ok",
                "method": "lora",
                "r": 16,
                "alpha": 32,
                "targets": "qv",
                "val_loss": 1.25,
                "rougeL": 41.5,
            }
        )
    return r


def test_runs_lists_every_run_with_its_status(results, capsys):
    assert main(["runs", str(results)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "status", "val_loss", "rougeL", "best"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"r4_a16_qv", "r16_a32_qv", "r8_a16_qv", "r32_a16_qv"}
    assert "merged" in rows["r16_a32_qv"] and "41.5" in rows["r16_a32_qv"] and "best (rougeL)" in rows["r16_a32_qv"]
    assert (
        "trained" in rows["r4_a16_qv"]
        and "checkpoint at step 20" in rows["r8_a16_qv"]
        and "failed" in rows["r32_a16_qv"]
    )
    assert main(["runs", str(results / "missing")]) == 1


def test_best_prints_the_marked_run_and_its_files(results, capsys):
    assert main(["best", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("r16_a32_qv  (best (rougeL))") and "rougeL 41.5" in out
    assert f"adapter: {results / 'runs' / 'r16_a32_qv' / 'adapter'}" in out
    (results / "comparison.csv").unlink()
    assert main(["best", str(results)]) == 1
    assert "comparison.csv: not found" in capsys.readouterr().err
