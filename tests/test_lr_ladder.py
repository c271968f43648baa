"""grid.learning_rate: auto — the documented ladder, readable and stable run names."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import BASE_METRICS, write_train_stats
from loraflow.config import expand_grid, validate_config
from loraflow.search.ladder import LORA_OVER_FULL, RUNGS, auto_rates, ladder, series_value


def test_auto_makes_the_documented_ladder_with_the_default_full_rate():
    cfg = validate_config({"grid": {"r": [8], "learning_rate": "auto"}})
    runs = expand_grid(cfg)
    # 10 x train.learning_rate_full (5e-5) = 5e-4: the 1-3-10 window around it
    assert sorted(hp["learning_rate"] for hp in runs.values()) == [0.0001, 0.0003, 0.001, 0.003]
    # the rung at train.learning_rate keeps the plain name; the others get the _lr suffix, as written
    assert list(runs) == ["r8_a16_qv_lr0.0001", "r8_a16_qv_lr0.0003", "r8_a16_qv", "r8_a16_qv_lr0.003"]
    assert expand_grid(validate_config({"grid": {"r": [8], "learning_rate": "auto"}})) == runs  # stable


def test_auto_follows_the_full_fine_tuning_rate_and_skips_method_full():
    cfg = validate_config(
        {"train": {"learning_rate_full": 1e-4}, "grid": {"method": ["lora", "full"], "learning_rate": "auto"}}
    )
    runs = expand_grid(cfg)
    assert sorted(hp["learning_rate"] for hp in runs.values() if hp["method"] == "lora") == [0.0003, 0.001, 0.003, 0.01]
    assert [n for n, hp in runs.items() if hp["method"] == "full"] == ["full"]
    assert runs["full"]["learning_rate"] == 1e-4


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-7, max_value=1e-2), st.integers(min_value=3, max_value=4))
def test_ladder_is_centred_about_3x_apart_and_the_nearest_window(centre, rungs):
    rates = ladder(centre, rungs)
    assert len(rates) == rungs and rates == sorted(rates)
    ratios = [b / a for a, b in zip(rates, rates[1:])]
    assert all(3.0 - 1e-9 <= q <= 3.34 for q in ratios)  # 1 -> 3 -> 10: factors 3 and 10/3
    gap = abs(sum(math.log10(v) for v in rates) / rungs - math.log10(centre))
    start = next(k for k in range(-40, 10) if series_value(k) == rates[0])
    for other in (start - 1, start + 1):  # the neighbouring windows of the series are no nearer
        window = [series_value(k) for k in range(other, other + rungs)]
        assert gap <= abs(sum(math.log10(v) for v in window) / rungs - math.log10(centre)) + 1e-12
    assert gap <= 0.27  # within about half a step of the series
    assert all(len(f"{v:g}") <= 6 for v in rates)  # short names: 0.0003, 3e-05


def test_auto_rates_use_the_published_ratio():
    assert LORA_OVER_FULL == 10.0 and RUNGS == 4
    assert auto_rates(2e-5) == ladder(2e-4)


def test_each_method_is_compared_at_its_own_best_rate(tmp_path):
    """lora is best at 0.001 and dora at 0.0001 on validation: the methods section pairs each method with
    its own best rate, and comparison.csv flags those runs."""
    import json

    import numpy as np
    import pandas as pd

    from loraflow.report.settings import BootstrapSettings, TableInputs, TableOutputs, TableSettings
    from loraflow.report.table import write_comparison

    cfg = validate_config({"grid": {"r": [8], "method": ["lora", "dora"], "learning_rate": [0.0001, 0.001]}})
    runs = expand_grid(cfg)
    val = {"r8_a16_qv_lr0.0001": 30.0, "r8_a16_qv": 45.0, "r8_a16_qv_dora_lr0.0001": 47.0, "r8_a16_qv_dora": 20.0}
    assert set(runs) == set(val)
    base = dict(BASE_METRICS)
    (tmp_path / "base").mkdir()
    (tmp_path / "base/eval.json").write_text(json.dumps(base))
    rows = np.random.default_rng(0).uniform(0, 60, 50)

    def scores(shift):
        return "".join(
            json.dumps(
                {
                    "split": "test",
                    "id": f"t{i}",
                    "loss_sum": 10.0,
                    "tokens": 10,
                    "rouge1": v,
                    "rouge2": v,
                    "rougeL": v,
                    "exact_match": 0.0,
                    "bleu_stats": [10, 10, 5, 3, 2, 1, 10, 9, 8, 7],
                }
            )
            + "\n"
            for i, v in enumerate(rows + shift)
        )

    (tmp_path / "base/scores.jsonl").write_text(scores(0))
    files = ([], [], [])
    for name, v in val.items():
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        write_train_stats(d / "train_stats.json")
        (d / "eval.json").write_text(
            json.dumps({**base, "rougeL": float(rows.mean() + v / 10), "val": {**base, "rougeL": v}})
        )
        (d / "scores.jsonl").write_text(scores(v / 10))
        for lst, f in zip(files, ("train_stats.json", "eval.json", "scores.jsonl")):
            lst.append(str(d / f))
    write_comparison(
        TableInputs(
            str(tmp_path / "base/eval.json"),
            files[0],
            files[1],
            scores=files[2],
            base_scores=str(tmp_path / "base/scores.jsonl"),
        ),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("rougeL", BootstrapSettings(bootstrap_samples=300)),
    )
    table = pd.read_csv(tmp_path / "c.csv").set_index("run")
    assert table["method_best"].fillna("").to_dict() == {
        "base": "",
        "r8_a16_qv_lr0.0001": "",
        "r8_a16_qv": "best rate for lora",
        "r8_a16_qv_dora_lr0.0001": "best rate for dora",
        "r8_a16_qv_dora": "",
    }
    md = (tmp_path / "c.md").read_text()
    section = md.split("## Methods at their best rate")[1].split("\n## ")[0]
    assert (
        "| lora | r8_a16_qv | 0.001 | 45.00 |" in section
        and "| dora | r8_a16_qv_dora_lr0.0001 | 0.0001 | 47.00 |" in section
    )
    assert (
        "**Methods at their best rate** (on validation): lora at lr 0.001 (r8_a16_qv); dora at lr 0.0001 "
        "(r8_a16_qv_dora_lr0.0001)." in md
    )
