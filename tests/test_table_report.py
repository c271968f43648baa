"""Comparison table (best run, seeds mean ± std, failures) and report figures, from hand-made stage outputs."""

import json

import pandas as pd
import pytest

from loraflow.evaluate import is_classification
from loraflow.report import make_report, pareto_front
from loraflow.table import write_comparison, write_partial_comparison


def stage_files(tmp_path, runs: dict[str, dict], rouge: dict[str, float]):
    """Write train_stats / eval / merge_check files like the stages do; returns the three lists."""
    base = {"eval_loss": 2.0, "perplexity": 7.39, "bleu": 5.0, "rouge1": 20.0, "rouge2": 5.0, "rougeL": 18.0, "exact_match": 0.0, "consistency": 40.0}
    (tmp_path / "base").mkdir(parents=True, exist_ok=True)
    (tmp_path / "base" / "eval.json").write_text(json.dumps(base))
    files = ([], [], [])
    for name, hp in runs.items():
        d = tmp_path / "runs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "preflight.json").write_text("{}")
        (d / "train_stats.json").write_text(json.dumps({"trainable_params": 1000 * hp["r"], "trainable_pct": 0.1, "adapter_mb": 0.5,
                                                        "train_time_s": 10.0, "peak_memory_mb": 900.0, "final_train_loss": 1.0, "best_eval_loss": 1.1}))
        (d / "eval.json").write_text(json.dumps({**base, "eval_loss": 1.0, "rougeL": rouge[name], "consistency": 80.0}))
        (d / "merge_check.json").write_text(json.dumps({"max_abs_logit_diff": 1e-5, "passed": True, "tok_s_base": 50.0, "tok_s_adapter": 40.0, "tok_s_merged": 50.0}))
        (d / "train_log.csv").write_text("step,epoch,train_loss,eval_loss,lr,tokens_seen,elapsed_s\n1,1,2.0,,0.1,10,1\n2,1,1.5,1.4,0.1,20,2\n")
        (d / "samples.jsonl").write_text(json.dumps({"prompt": "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n", "reference": "A",
                                                     "base_answer": "<b>x</b>", "tuned_answer": "A"}) + "\n")
        for lst, f in zip(files, ("train_stats.json", "eval.json", "merge_check.json")):
            lst.append(str(d / f))
    return files


def hp(r, alpha, seed, point=None):
    return {"r": r, "lora_alpha": alpha, "targets": "qv", "seed": seed, "point": point or f"r{r}_a{alpha:g}_qv"}


def test_best_run_and_readable_markdown(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42)}
    files = stage_files(tmp_path, runs, {"r4_a8_qv": 30.0, "r8_a8_qv": 35.0})
    df = write_comparison(str(tmp_path / "base/eval.json"), *files, str(tmp_path / "c.csv"), str(tmp_path / "c.md"), runs,
                          "rougeL", str(tmp_path / "p.csv"))
    assert df.loc[df["best"] != "", "run"].tolist() == ["r8_a8_qv"]
    assert "point" not in df and "seed" not in df  # no seeds axis: no noise columns
    assert list(df["tok_s_merged"].dropna()) == [50.0, 50.0]
    md = (tmp_path / "c.md").read_text()
    assert "Best run by `rougeL`: **r8_a8_qv**" in md and "## Quality" in md and "## Cost" in md
    assert max(len(line.split("|")) for line in md.splitlines()) < 22  # tables split to stay readable


def test_seeds_give_mean_and_std_per_point(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r4_a8_qv_s1": hp(4, 8.0, 1), "r8_a8_qv": hp(8, 8.0, 42), "r8_a8_qv_s1": hp(8, 8.0, 1)}
    rouge = {"r4_a8_qv": 30.0, "r4_a8_qv_s1": 40.0, "r8_a8_qv": 36.0, "r8_a8_qv_s1": 36.0}
    files = stage_files(tmp_path, runs, rouge)
    write_comparison(str(tmp_path / "base/eval.json"), *files, str(tmp_path / "c.csv"), str(tmp_path / "c.md"), runs, "rougeL", str(tmp_path / "p.csv"))
    points = pd.read_csv(tmp_path / "p.csv").set_index("point")
    assert points.loc["r4_a8_qv", "rougeL_mean"] == 35.0 and points.loc["r4_a8_qv", "rougeL_std"] == pytest.approx(7.0711, abs=1e-4)
    assert points.loc["r8_a8_qv", "rougeL_std"] == 0.0
    assert points.loc["r8_a8_qv", "best"] == "best mean (rougeL)"  # 36 > 35 on the mean, though r4 has the best single run
    md = (tmp_path / "c.md").read_text()
    assert "35.00 ± 7.07" in md and "Best grid point by mean `rougeL`: **r8_a8_qv**" in md


def test_partial_table_lists_failures_with_their_error(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42)}
    stage_files(tmp_path, runs, {"r4_a8_qv": 30.0, "r8_a8_qv": 35.0})
    (tmp_path / "runs/r8_a8_qv/eval.json").unlink()
    (tmp_path / "logs/evaluate").mkdir(parents=True)
    (tmp_path / "logs/evaluate/r8_a8_qv.log").write_text("loading\nRuntimeError: CUDA out of memory\n")
    df = write_partial_comparison(str(tmp_path), runs, "rougeL")
    assert df.set_index("run").loc["r8_a8_qv", "status"] == "FAILED in evaluate: RuntimeError: CUDA out of memory"
    assert df.loc[df["best"] != "", "run"].tolist() == ["r4_a8_qv"]
    assert "1 run(s) did not finish: r8_a8_qv" in (tmp_path / "comparison.md").read_text()


def test_pareto_front():
    pts = [(100, 30.0), (200, 35.0), (300, 33.0), (400, 40.0), (150, 29.0)]
    assert pareto_front(pts) == [0, 1, 3]


def test_report_figures_are_real_pngs_and_samples_are_escaped(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42), "r4_a16_qv": hp(4, 16.0, 42)}
    files = stage_files(tmp_path, runs, {"r4_a8_qv": 30.0, "r8_a8_qv": 35.0, "r4_a16_qv": 33.0})
    write_comparison(str(tmp_path / "base/eval.json"), *files, str(tmp_path / "c.csv"), str(tmp_path / "c.md"), runs, "rougeL")
    out = {k: str(tmp_path / "plots" / f) for k, f in (("out_losses", "l.png"), ("out_heatmap", "h.png"), ("out_pareto", "p.png"), ("out_samples", "s.html"))}
    make_report(str(tmp_path / "c.csv"), [str(tmp_path / f"runs/{r}/train_log.csv") for r in runs],
                [str(tmp_path / f"runs/{r}/samples.jsonl") for r in runs], run_names=list(runs), **out)
    for key in ("out_losses", "out_heatmap", "out_pareto"):
        assert open(out[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    html = open(out["out_samples"], encoding="utf-8").read()
    assert "r8_a8_qv" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "<td>Q?</td>" in html


def test_classification_detection():
    assert is_classification(["positive", "negative", "Positive", "negative", "positive", "negative"])
    assert not is_classification(["The X1 costs $129.", "Two years of warranty.", "Red and blue."])
