"""Forgetting-aware choice: the retention floor, the Pareto set, and the headline that names both runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from helpers import BASE_METRICS, write_train_stats
from loraflow.evaluate.retention import retention_part
from loraflow.report.selection import apply_selection, choose, pareto_front
from loraflow.report.settings import Selection


def table(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    """(run, val ROUGE-L, val retention) rows plus the base row, as the table stage holds them."""
    df = pd.DataFrame(
        [{"run": "base", "status": "ok", "val_metric": np.nan, "val_retention": 100.0, "rougeL": 10.0}]
        + [{"run": r, "status": "ok", "val_metric": m, "val_retention": k, "rougeL": m} for r, m, k in rows]
    )
    df["best"] = ""
    return df


CONSTRUCTED = [("sharp", 62.0, 47.0), ("balanced", 55.0, 92.0), ("gentle", 40.0, 98.0), ("dominated", 39.0, 90.0)]


def test_the_floor_picks_the_best_run_that_keeps_enough_and_names_the_rejected_one():
    df = apply_selection(table(CONSTRUCTED), "rougeL", Selection("best", 90))
    assert df.loc[df["best"] != "", "run"].tolist() == ["balanced"]
    info = df.attrs["selection"]
    assert info["chosen"] == "balanced" and info["rejected"] == "sharp" and not info["none_hold"]
    assert (
        df.set_index("run").loc["sharp", "floor"] == "below floor"
        and df.set_index("run").loc["gentle", "floor"] == "holds"
    )
    assert set(df.loc[df["pareto"] == "pareto", "run"]) == {
        "sharp",
        "balanced",
        "gentle",
    }  # dominated: gentle beats it on both


def test_without_a_floor_the_best_on_validation_is_chosen():
    df = apply_selection(table(CONSTRUCTED), "rougeL", Selection())
    assert df.loc[df["best"] != "", "run"].tolist() == ["sharp"] and df.attrs["selection"]["rejected"] is None
    df = apply_selection(table(CONSTRUCTED), "rougeL", Selection("best", 0))  # 0 = no floor
    assert df.loc[df["best"] != "", "run"].tolist() == ["sharp"]


def test_when_no_run_holds_the_floor_the_one_that_kept_most_is_chosen_and_said():
    df = apply_selection(table(CONSTRUCTED), "rougeL", Selection("best", 99))
    assert df.attrs["selection"]["chosen"] == "gentle" and df.attrs["selection"]["none_hold"]
    assert set(df.loc[df["pareto"] == "pareto", "run"]) == {
        "sharp",
        "balanced",
        "gentle",
    }  # the Pareto set is shown all the same
    assert df.attrs["best_source"].startswith("validation")  # best.json records a validation choice


@settings(max_examples=150, deadline=None)
@given(hs.lists(hs.tuples(hs.floats(0, 100), hs.floats(0, 100)), min_size=1, max_size=8), hs.floats(1, 100))
def test_the_chosen_run_is_the_best_holder_of_the_floor(points, floor):
    rows = [(f"run{i}", m, k) for i, (m, k) in enumerate(points)]
    df = table(rows)
    out = choose(df, "rougeL", Selection("best", floor))
    holders = [(m, r) for r, m, k in rows if k >= floor]
    chosen = df.at[out["chosen"], "run"]
    if holders:
        assert dict((r, k) for r, _, k in rows)[chosen] >= floor
        assert df.at[out["chosen"], "val_metric"] == max(m for m, _ in holders)
        best_all = max(rows, key=lambda x: x[1])
        assert (out["rejected"] is None) == (
            best_all[2] >= floor or best_all[1] == max(m for m, _ in holders)
        )  # a tie rejects nothing
    else:
        assert out["none_hold"] and df.at[out["chosen"], "val_retention"] == max(k for _, _, k in rows)
    front = pareto_front([(m, k) for _, m, k in rows])
    for i, (m, k) in enumerate(points):  # nothing on the front is dominated; everything off it is
        dominated = any(u >= m and v >= k and (u > m or v > k) for j, (u, v) in enumerate(points) if j != i)
        assert (i in front) != dominated


def _stage(tmp_path, runs: dict[str, dict]):
    """Stage files: val and test task scores per row, and retention lines for both parts of the items."""
    base = dict(BASE_METRICS)
    items = [f"ret-{i:03d}" for i in range(80)]
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0, 60, 100)

    def lines(shift: float, noise: float, forget: float) -> list[dict]:
        out = []
        for split in ("test", "val"):
            vals = difficulty + shift + rng.normal(0, noise, 100)
            out += [
                {
                    "split": split,
                    "id": f"{split}{i}",
                    "loss_sum": 10.0,
                    "tokens": 10,
                    "rouge1": v,
                    "rouge2": v,
                    "rougeL": v,
                    "exact_match": 0.0,
                    "bleu_stats": [10, 10, 5, 3, 2, 1, 10, 9, 8, 7],
                }
                for i, v in enumerate(vals)
            ]
        out += [
            {
                "split": "retention",
                "id": i,
                "part": retention_part(i),
                "correct": 0.0 if k < forget * len(items) else 100.0,
            }
            for k, i in enumerate(items)
        ]
        return out

    (tmp_path / "base").mkdir(parents=True, exist_ok=True)
    (tmp_path / "base/eval.json").write_text(
        json.dumps({**base, "retention": {"score": 100.0, "measured_on": "all items"}})
    )
    (tmp_path / "base/scores.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines(0, 0, 0)))
    files = ([], [], [])
    hps = {}
    for k, (name, spec) in enumerate(runs.items()):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        score_lines = lines(spec["shift"], spec["noise"], spec["forget"])
        (d / "scores.jsonl").write_text("".join(json.dumps(x) + "\n" for x in score_lines))
        val = float(np.mean([x["rougeL"] for x in score_lines if x["split"] == "val"]))
        test = float(np.mean([x["rougeL"] for x in score_lines if x["split"] == "test"]))
        (d / "eval.json").write_text(
            json.dumps(
                {
                    **base,
                    "eval_loss": 1.0,
                    "rougeL": test,
                    "val": {**base, "rougeL": val},
                    "retention": {
                        "score": 100 * (1 - spec["forget"]),
                        "measured_on": "items the base model answers correctly",
                    },
                }
            )
        )
        write_train_stats(d / "train_stats.json")
        hps[name] = {
            "r": 4 * (k + 1),
            "lora_alpha": 8.0,
            "targets": "qv",
            "seed": 42,
            "point": name,
            "learning_rate": None,
        }
        for lst, f in zip(files, ("train_stats.json", "eval.json", "scores.jsonl")):
            lst.append(str(d / f))
    return hps, files


def _write(tmp_path, runs, **kw):
    from loraflow.report.settings import BootstrapSettings, TableInputs, TableOutputs, TableSettings
    from loraflow.report.table import write_comparison

    hps, files = _stage(tmp_path, runs)
    df = write_comparison(
        TableInputs(
            str(tmp_path / "base/eval.json"),
            files[0],
            files[1],
            scores=files[2],
            base_scores=str(tmp_path / "base/scores.jsonl"),
        ),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md"), out_best=str(tmp_path / "best.json")),
        hps,
        TableSettings("rougeL", BootstrapSettings(bootstrap_samples=500), Selection(**kw)),
    )
    return df.set_index("run"), (tmp_path / "c.md").read_text()


RUNS = {
    "r4_a8_qv": {"shift": 30, "noise": 1, "forget": 0.5},  # learned most, forgot half
    "r8_a8_qv": {"shift": 20, "noise": 1, "forget": 0.05},  # learned less, kept 95 %
    "r12_a8_qv": {"shift": 19.9, "noise": 3, "forget": 0.0},
}  # as good as r8 within noise, kept everything


def test_the_table_with_a_floor_chooses_on_validation_and_says_what_it_rejected(tmp_path):
    t, md = _write(tmp_path, RUNS, retention_floor=90)
    assert t.loc["r8_a8_qv", "best"] == "best (rougeL)" and (t["best"] != "").sum() == 1
    assert json.loads((tmp_path / "best.json").read_text())["run"] == "r8_a8_qv"
    assert t.loc["r4_a8_qv", "val_retention"] < 90 <= t.loc["r8_a8_qv", "val_retention"]
    assert "**Chosen**: r8_a8_qv" in md and "**Rejected for forgetting**: r4_a8_qv" in md
    rejected_line = next(line for line in md.splitlines() if line.startswith("**Rejected"))
    assert (
        f"val retention {t.loc['r4_a8_qv', 'val_retention']:.1f} %" in rejected_line and "val ROUGE-L" in rejected_line
    )
    assert "## Learned vs forgotten (Pareto set, validation)" in md and "val retention (chooses)" in md


def test_pareto_choice_keeps_more_when_the_task_metric_is_tied_on_validation(tmp_path):
    t, md = _write(tmp_path, RUNS, select="pareto", retention_floor=90)
    assert t.loc["r12_a8_qv", "best"] == "best (rougeL)"  # tied with r8 on validation, keeps more
    t0, _ = _write(tmp_path / "plain", RUNS)
    assert t0.loc["r4_a8_qv", "best"] == "best (rougeL)"  # defaults: the best on validation, no floor


def test_the_learned_vs_forgotten_figure(tmp_path):
    from loraflow.report.pareto import plot_learned_forgotten

    _write(tmp_path, RUNS, retention_floor=90)
    assert plot_learned_forgotten(str(tmp_path / "c.csv"), "rougeL", str(tmp_path / "lf.png"), 90)
    assert (tmp_path / "lf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = pd.DataFrame([{"run": "base", "status": "ok", "best": ""}])
    assert not plot_learned_forgotten(empty, "rougeL", str(tmp_path / "none.png"))
    assert (tmp_path / "none.png").is_file()


def test_a_floor_without_the_retention_set_is_a_config_error():
    from loraflow.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match="config key table.retention_floor: .*evaluate.retention_items"):
        validate_config({"table": {"retention_floor": 90}, "evaluate": {"retention_items": 0}})
    with pytest.raises(ConfigError, match="config key table.select"):
        validate_config({"table": {"select": "pareto"}, "evaluate": {"retention_items": 0}})
    cfg = validate_config({"table": {"retention_floor": 90, "select": "pareto"}})
    assert cfg["table"]["cluster_by"] == "auto"
    defaults = validate_config({})["table"]
    assert (defaults["select"], defaults["retention_floor"]) == ("best", 0)  # the best on validation, no floor


def test_a_floor_without_validation_retention_says_it_was_not_applied():
    df = table(CONSTRUCTED).drop(columns=["val_retention"])
    df = apply_selection(df, "rougeL", Selection("best", 90))
    assert df.attrs["selection"]["chosen"] == "sharp" and "floor was not applied" in df.attrs["best_source"]
