"""Comparison table (best run, seeds mean ± std, failures) and report figures, from hand-made stage outputs."""

import json

import pandas as pd
import pytest

from helpers import hp, stage_files
from loraflow.evaluate.run import is_classification
from loraflow.report.figures import pareto_front
from loraflow.report.partial import write_partial_comparison
from loraflow.report.settings import (
    BootstrapSettings,
    ClassifierTableInputs,
    ClassifierTableSettings,
    ReportInputs,
    ReportOutputs,
    ReportSettings,
    TableInputs,
    TableOutputs,
    TableSettings,
)
from loraflow.report.stage import make_report
from loraflow.report.table import write_comparison


def table_inputs(tmp_path, files) -> TableInputs:
    """The table's inputs: the base model's eval.json and the train_stats / eval / merge_check lists of stage_files."""
    return TableInputs(str(tmp_path / "base/eval.json"), *files)


def score_lines(rouge_rows, loss_rows=None, retention: dict[str, float] | None = None) -> list[dict]:
    """scores.jsonl lines like the evaluate stage writes: test rows (id, loss, per-row metrics), retention items."""
    out = []
    for i, v in enumerate(rouge_rows):
        loss = 1.0 if loss_rows is None else loss_rows[i]
        out.append(
            {
                "split": "test",
                "id": f"t{i}",
                "loss_sum": 10 * loss,
                "tokens": 10,
                "rouge1": v,
                "rouge2": v,
                "rougeL": v,
                "exact_match": 0.0,
                "bleu_stats": [10, 10, 5, 3, 2, 1, 10, 9, 8, 7],
            }
        )
    for item, ok in (retention or {}).items():
        out.append({"split": "retention", "id": item, "correct": ok})
    return out


def test_best_run_and_readable_markdown(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42)}
    files = stage_files(tmp_path, runs, {"r4_a8_qv": 30.0, "r8_a8_qv": 35.0})
    df = write_comparison(
        table_inputs(tmp_path, files),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md"), str(tmp_path / "p.csv")),
        runs,
        TableSettings("rougeL"),
    )
    assert df.loc[df["best"] != "", "run"].tolist() == ["r8_a8_qv"]
    assert "point" not in df and "seed" not in df  # no seeds axis: no noise columns
    assert list(df["tok_s_merged"].dropna()) == [50.0, 50.0]
    md = (tmp_path / "c.md").read_text()
    assert "Best run by `rougeL`: **r8_a8_qv**" in md and "## Quality" in md and "## Cost" in md
    assert max(len(line.split("|")) for line in md.splitlines()) < 22  # tables split to stay readable


def test_seeds_give_mean_and_std_per_point(tmp_path):
    runs = {
        "r4_a8_qv": hp(4, 8.0, 42),
        "r4_a8_qv_s1": hp(4, 8.0, 1),
        "r8_a8_qv": hp(8, 8.0, 42),
        "r8_a8_qv_s1": hp(8, 8.0, 1),
    }
    rouge = {"r4_a8_qv": 30.0, "r4_a8_qv_s1": 40.0, "r8_a8_qv": 36.0, "r8_a8_qv_s1": 36.0}
    files = stage_files(tmp_path, runs, rouge)
    write_comparison(
        table_inputs(tmp_path, files),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md"), str(tmp_path / "p.csv")),
        runs,
        TableSettings("rougeL"),
    )
    points = pd.read_csv(tmp_path / "p.csv").set_index("point")
    assert points.loc["r4_a8_qv", "rougeL_mean"] == 35.0 and points.loc["r4_a8_qv", "rougeL_std"] == pytest.approx(
        7.0711, abs=1e-4
    )
    assert points.loc["r8_a8_qv", "rougeL_std"] == 0.0
    assert (
        points.loc["r8_a8_qv", "best"] == "best mean (rougeL)"
    )  # 36 > 35 on the mean, though r4 has the best single run
    md = (tmp_path / "c.md").read_text()
    assert "35.00 ± 7.07" in md and "Best grid point by mean `rougeL`: **r8_a8_qv**" in md


def test_partial_table_lists_failures_with_their_error(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42)}
    stage_files(tmp_path, runs, {"r4_a8_qv": 30.0, "r8_a8_qv": 35.0})
    (tmp_path / "runs/r8_a8_qv/eval.json").unlink()
    (tmp_path / "logs/evaluate").mkdir(parents=True)
    (tmp_path / "logs/evaluate/r8_a8_qv.log").write_text("loading\nRuntimeError: CUDA out of memory\n")
    df = write_partial_comparison(str(tmp_path), runs, TableSettings("rougeL"))
    assert df.set_index("run").loc["r8_a8_qv", "status"] == "FAILED in evaluate: RuntimeError: CUDA out of memory"
    assert df.loc[df["best"] != "", "run"].tolist() == ["r4_a8_qv"]
    assert "1 run(s) did not finish: r8_a8_qv" in (tmp_path / "comparison.md").read_text()


def test_partial_table_with_one_finished_run_and_intervals(tmp_path):
    """With per-row scores (intervals on) and a single finished run, the partial table is still written
    and claims nothing about "every other run"."""
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42)}
    stage_files(tmp_path, runs, {"r4_a8_qv": 30.0, "r8_a8_qv": 35.0})
    (tmp_path / "base/scores.jsonl").write_text("".join(json.dumps(x) + "\n" for x in score_lines([10.0, 20.0, 30.0])))
    (tmp_path / "runs/r4_a8_qv/scores.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in score_lines([30.0, 35.0, 40.0]))
    )
    (tmp_path / "runs/r8_a8_qv/eval.json").unlink()
    df = write_partial_comparison(
        str(tmp_path), runs, TableSettings("rougeL", BootstrapSettings(bootstrap_samples=200))
    )
    assert "rougeL_lo" in df and df.loc[df["best"] != "", "run"].tolist() == ["r4_a8_qv"]
    md = (tmp_path / "comparison.md").read_text()
    assert "1 run(s) did not finish: r8_a8_qv" in md and "Every other run" not in md


def test_pareto_front():
    pts = [(100, 30.0), (200, 35.0), (300, 33.0), (400, 40.0), (150, 29.0)]
    assert pareto_front(pts) == [0, 1, 3]


def test_report_figures_are_real_pngs_and_samples_are_escaped(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42), "r4_a16_qv": hp(4, 16.0, 42)}
    files = stage_files(tmp_path, runs, {"r4_a8_qv": 30.0, "r8_a8_qv": 35.0, "r4_a16_qv": 33.0})
    write_comparison(
        table_inputs(tmp_path, files),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("rougeL"),
    )
    out = {
        k: str(tmp_path / "plots" / f)
        for k, f in (
            ("out_losses", "l.png"),
            ("out_heatmap", "h.png"),
            ("out_pareto", "p.png"),
            ("out_samples", "s.html"),
        )
    }
    make_report(
        ReportInputs(
            str(tmp_path / "c.csv"),
            [str(tmp_path / f"runs/{r}/train_log.csv") for r in runs],
            [str(tmp_path / f"runs/{r}/samples.jsonl") for r in runs],
        ),
        ReportOutputs(**out),
        ReportSettings(),
    )
    for key in ("out_losses", "out_heatmap", "out_pareto"):
        assert open(out[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    html = open(out["out_samples"], encoding="utf-8").read()
    assert "r8_a8_qv" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "<td>Q?</td>" in html


def test_classification_detection():
    assert is_classification(["positive", "negative", "Positive", "negative", "positive", "negative"])
    assert not is_classification(["The X1 costs $129.", "Two years of warranty.", "Red and blue."])


def test_selection_follows_validation_when_val_and_test_disagree(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42)}
    # r4 is better on validation, r8 on test: the test split must not choose
    files = stage_files(
        tmp_path, runs, rouge={"r4_a8_qv": 30.0, "r8_a8_qv": 45.0}, val={"r4_a8_qv": 40.0, "r8_a8_qv": 35.0}
    )
    df = write_comparison(
        table_inputs(tmp_path, files),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("rougeL"),
    )
    assert df.loc[df["best"] == "best (rougeL)", "run"].tolist() == ["r4_a8_qv"]
    assert list(df.set_index("run").loc[["r4_a8_qv", "r8_a8_qv"], "val_metric"]) == [40.0, 35.0]
    md = (tmp_path / "c.md").read_text()
    assert "Best run by `rougeL`: **r4_a8_qv** (chosen on validation)" in md and "held out" in md


def test_loss_metric_chooses_on_validation_loss_without_val_block(tmp_path):
    runs = {"r4_a8_qv": hp(4, 8.0, 42), "r8_a8_qv": hp(8, 8.0, 42)}
    files = stage_files(tmp_path, runs, {"r4_a8_qv": 30.0, "r8_a8_qv": 35.0})
    stats = json.loads(open(files[0][1]).read())
    open(files[0][1], "w").write(json.dumps({**stats, "best_eval_loss": 0.9}))  # r8: lower validation loss of training
    df = write_comparison(
        table_inputs(tmp_path, files),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("eval_loss"),
    )
    assert df.loc[df["best"] != "", "run"].tolist() == ["r8_a8_qv"] and df.attrs["best_source"] == "validation loss"


def test_intervals_tied_for_best_retention_and_main_effects(tmp_path):
    """Constructed per-row scores: twin = best + small noise (tied), weak = clearly worse; retention of
    the base-correct items; main effects over r x alpha; lists given in a shuffled order."""
    import numpy as np

    rng = np.random.default_rng(0)
    runs = {
        "r4_a16_qv": hp(4, 16.0, 42),
        "r4_a32_qv": hp(4, 32.0, 42),
        "r16_a16_qv": hp(16, 16.0, 42),
        "r16_a32_qv": hp(16, 32.0, 42),
    }
    difficulty = rng.uniform(0, 60, 80)
    per_row = {
        "r4_a32_qv": difficulty + 30,
        "r16_a32_qv": difficulty + 30 + rng.normal(0, 2, 80),
        "r4_a16_qv": difficulty + 10 + rng.normal(0, 2, 80),
        "r16_a16_qv": difficulty + 11 + rng.normal(0, 2, 80),
    }
    rouge = {k: float(v.mean()) for k, v in per_row.items()}
    files = stage_files(
        tmp_path,
        runs,
        rouge,
        val={"r4_a16_qv": 20.0, "r4_a32_qv": 50.0, "r16_a16_qv": 21.0, "r16_a32_qv": 49.0},
        precision="fp32",
    )
    items = [f"ret-{i}" for i in range(50)]
    base_ret = {i: 100.0 if k < 40 else 0.0 for k, i in enumerate(items)}  # the base answers 40 of 50
    (tmp_path / "base/scores.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in score_lines(difficulty, retention=base_ret))
    )
    scores = []
    for name in runs:
        forgets = 10 if "a32" in name else 2  # alpha 32 forgets 10 of the 40 items, alpha 16 two
        ret = {i: (0.0 if k < forgets else 100.0) for k, i in enumerate(items[:40])}
        path = tmp_path / "runs" / name / "scores.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in score_lines(per_row[name], retention=ret)))
        scores.append(str(path))
    shuffled = [list(reversed(f)) for f in files]  # matched by run directory, not by position
    df = write_comparison(
        TableInputs(
            str(tmp_path / "base/eval.json"),
            *shuffled[:2],
            scores=list(reversed(scores)),
            base_scores=str(tmp_path / "base/scores.jsonl"),
        ),
        TableOutputs(
            str(tmp_path / "c.csv"),
            str(tmp_path / "c.md"),
            str(tmp_path / "p.csv"),
            out_effects_csv=str(tmp_path / "e.csv"),
        ),
        runs,
        TableSettings("rougeL", BootstrapSettings(bootstrap_samples=1000, seed=1)),
    )
    t = df.set_index("run")
    assert (
        t.loc["r4_a32_qv", "best"] == "best (rougeL)"
        and t.loc["r16_a32_qv", "tied"] == "tied for best"
        and (df["best"] != "").sum() == 1
    )
    assert (
        t.loc["r4_a16_qv", "tied"] == ""
        and t.loc["r4_a16_qv", "vs_best_hi"] < 0
        and t.loc["r4_a16_qv", "vs_best_p"] < 0.05
    )
    assert t.loc["r4_a32_qv", "rougeL"] == pytest.approx(rouge["r4_a32_qv"])  # each run got its own file
    assert t.loc["r4_a32_qv", "rougeL_lo"] < rouge["r4_a32_qv"] < t.loc["r4_a32_qv", "rougeL_hi"]
    assert t.loc["r4_a32_qv", "vs_base"] == pytest.approx(30.0) and t.loc["r4_a32_qv", "vs_base_p"] < 0.01
    # retention is reported on the test part of the items, and the validation part is kept apart for choosing
    from loraflow.evaluate.retention import retention_part

    for part, column in (("test", "retention"), ("val", "val_retention")):
        asked = [k for k, i in enumerate(items[:40]) if retention_part(i) == part]
        kept = 100.0 * sum(k >= 10 for k in asked) / len(asked)  # alpha 32 forgot items 0-9
        assert t.loc["r4_a32_qv", column] == pytest.approx(kept) and t.loc["r4_a32_qv", f"{column}_items"] == len(asked)
    assert t.loc["r4_a32_qv", "retention_items"] + t.loc["r4_a32_qv", "val_retention_items"] == 40
    assert (
        t.loc["r4_a32_qv", "d_retention"] == pytest.approx(t.loc["r4_a32_qv", "retention"] - 100)
        and t.loc["r4_a32_qv", "d_retention"] < 0
        and t.loc["r4_a32_qv", "d_retention_lo"] < -5
    )
    assert t.loc["base", "retention"] == 100.0 and t.loc["r4_a32_qv", "merge_check"] == "n/a"  # merges optional
    assert t.loc["r4_a32_qv", "precision"] == "fp32" and t.loc["r16_a32_qv", "scale"] == pytest.approx(2.0)
    effects = pd.read_csv(tmp_path / "e.csv")
    alpha = effects[
        (effects["metric"] == "rougeL") & (effects["axis"] == "alpha") & (effects["level"].astype(str) == "32.0")
    ].iloc[0]
    assert alpha["effect"] == pytest.approx(
        (rouge["r4_a32_qv"] + rouge["r16_a32_qv"] - rouge["r4_a16_qv"] - rouge["r16_a16_qv"]) / 2
    )
    assert alpha["effect_lo"] > 0
    md = (tmp_path / "c.md").read_text()
    assert "**Tied for best**" in md and "r16_a32_qv (" in md and "alpha 16→32: +" in md and "ROUGE-L" in md
    assert (
        "## Retention" in md
        and "What it cost" in md
        and "r × alpha at one learning rate" not in md
        or "effective learning rate" in md
    )

    out = {
        k: str(tmp_path / "plots" / f)
        for k, f in (
            ("out_losses", "l.png"),
            ("out_heatmap", "h.png"),
            ("out_pareto", "p.png"),
            ("out_samples", "s.html"),
            ("out_headline", "head.png"),
            ("out_ranking", "rank.png"),
            ("out_effects", "eff.png"),
            ("out_tradeoff", "t.png"),
        )
    }
    make_report(
        ReportInputs(
            str(tmp_path / "c.csv"),
            [str(tmp_path / f"runs/{r}/train_log.csv") for r in runs],
            [str(tmp_path / f"runs/{r}/samples.jsonl") for r in reversed(runs)],
            effects=str(tmp_path / "e.csv"),
            points=str(tmp_path / "p.csv"),
        ),
        ReportOutputs(out_captions=str(tmp_path / "plots/captions"), **out),
        ReportSettings(),
    )
    for key in ("out_headline", "out_ranking", "out_effects", "out_tradeoff"):
        assert open(out[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "r4_a32_qv" in open(out["out_samples"], encoding="utf-8").read()  # the best run's samples, found by name
    caption = (tmp_path / "plots/captions/headline.rst").read_text()
    assert (
        "r4_a32_qv" in caption
        and "Tied for best" in caption
        and "alpha 16→32" in caption
        and "Retention loss" in caption
    )


def test_learning_rate_axis_keeps_default_names():
    from loraflow.config import SCHEMA_PATH, expand_grid, load_yaml, validate_config

    config = validate_config(load_yaml(SCHEMA_PATH.parents[2] / "config.yaml"))
    plain = expand_grid(config)
    config["grid"]["learning_rate"] = [config["train"]["learning_rate"], 0.0003]
    swept = expand_grid(config)
    assert set(plain) <= set(swept) and len(swept) == 2 * len(plain)
    assert swept["r4_a16_qv"]["learning_rate"] == config["train"]["learning_rate"]
    assert swept["r4_a16_qv_lr0.0003"] == {**swept["r4_a16_qv"], "point": "r4_a16_qv_lr0.0003", "learning_rate": 0.0003}


def test_cls_table_chooses_on_validation_with_intervals(tmp_path):
    from loraflow.tasks.seq_cls.table import write_comparison as cls_write

    def ev(val_acc, test_acc):
        split = lambda acc: {"accuracy": acc, "macro_f1": acc, "per_class": {"pos": {"f1": acc}, "neg": {"f1": acc}}}  # noqa: E731
        return {"val": split(val_acc), "test": split(test_acc)}

    labels = ["pos", "neg"] * 50

    def preds(correct: int):
        return [
            {"id": str(i), "label": y, "pred": y if i < correct else ("neg" if y == "pos" else "pos")}
            for i, y in enumerate(labels)
        ]

    runs = {
        "r4_a8_qv": {"method": "lora", "r": 4, "lora_alpha": 8.0, "targets": "qv"},
        "r8_a8_qv": {"method": "lora", "r": 8, "lora_alpha": 8.0, "targets": "qv"},
    }
    files = {"stats": [], "metrics": [], "preds": []}
    for name, (val_acc, test_ok) in {"r4_a8_qv": (90.0, 80), "r8_a8_qv": (85.0, 82)}.items():
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / "train_stats.json").write_text(
            json.dumps(
                {
                    "trainable_params": 1,
                    "trainable_pct": 0.1,
                    "adapter_mb": 0.1,
                    "train_time_s": 1.0,
                    "peak_memory_mb": 1.0,
                    "best_step": 3,
                    "final_train_loss": 0.1,
                }
            )
        )
        (d / "eval.json").write_text(json.dumps(ev(val_acc, float(test_ok))))
        (d / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds(test_ok)))
        for k, f in (("stats", "train_stats.json"), ("metrics", "eval.json"), ("preds", "predictions.jsonl")):
            files[k].append(str(d / f))
    b = tmp_path / "baselines" / "majority"
    b.mkdir(parents=True)
    (b / "eval.json").write_text(json.dumps(ev(50.0, 50.0)))
    (b / "predictions.jsonl").write_text(
        "".join(json.dumps({"id": str(i), "label": y, "pred": "pos"}) + "\n" for i, y in enumerate(labels))
    )
    inputs = ClassifierTableInputs(
        [str(b / "eval.json")],
        files["stats"],
        files["metrics"],
        predictions=files["preds"][::-1],
        baseline_predictions=[str(b / "predictions.jsonl")],
    )
    df = cls_write(inputs, str(tmp_path / "c.csv"), str(tmp_path / "c.md"), runs, ClassifierTableSettings("accuracy"))
    t = df.set_index("run")
    assert t.loc["r4_a8_qv", "best"] == "best (accuracy)"  # better on validation, worse on test
    assert (
        t.loc["r8_a8_qv", "tied"] == "tied for best"
        and (df["best"] != "").sum() == 1
        and t.loc["r8_a8_qv", "vs_best"] == pytest.approx(2.0)
    )
    assert t.loc["majority", "test_accuracy_lo"] < 50 < t.loc["majority", "test_accuracy_hi"]
    assert "chosen on validation" in (tmp_path / "c.md").read_text()
