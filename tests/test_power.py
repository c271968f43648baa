"""Minimum detectable effect, rows and seeds to separate two runs, P(best) in the table: known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from helpers import BASE_METRICS, write_train_stats
from loraflow.report import power as pw

Z80 = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.80}


def test_mde_is_the_closed_form():
    assert pw.PowerSettings().z == pytest.approx(Z80, abs=1e-9)
    d = np.random.default_rng(0).normal(1.0, 4.0, 250)
    se = pw.standard_error(d)
    assert se == pytest.approx(np.std(d, ddof=1) / math.sqrt(250))
    assert pw.mde(se) == pytest.approx(Z80 * np.std(d, ddof=1) / math.sqrt(250))
    assert pw.mde(1.0, pw.PowerSettings(alpha=0.01, power=0.9)) == pytest.approx(
        2.5758293035489 + 1.2815515655446, abs=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.floats(-100, 100), min_size=3, max_size=60), hs.floats(0.1, 50))
def test_rows_needed_scales_as_one_over_delta_squared(values, delta):
    d = np.asarray(values)
    se = pw.standard_error(d)
    # rows like these in singleton groups: the cluster-robust form equals the row-wise one
    assert pw.standard_error(d, [str(i) for i in range(len(d))]) == pytest.approx(se, rel=1e-9, abs=1e-12)
    if se > 1e-9:
        n = pw.rows_needed(se, len(d), delta)
        exact = len(d) * (pw.mde(se) / delta) ** 2
        assert n == math.ceil(exact - 1e-9) or n == math.ceil(exact)
        assert pw.rows_needed(se, len(d), pw.mde(se)) in (len(d), len(d) + 1)  # the MDE needs the rows we have
    assert pw.rows_needed(se, len(d), 0.0) is None


def test_a_true_effect_of_one_mde_is_detected_about_80_percent_of_the_time():
    """Simulated test splits whose true paired difference equals the MDE computed from the true spread."""
    rng = np.random.default_rng(1)
    n, sd, sims = 200, 10.0, 2000
    effect = Z80 * sd / math.sqrt(n)
    d = rng.normal(effect, sd, size=(sims, n))
    z = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    assert 0.76 < np.mean(np.abs(z) > 1.959963984540054) < 0.84


def test_clustered_standard_error_counts_groups_not_rows():
    """Ten identical rows per group carry the information of one: the clustered se is that of the group means."""
    rng = np.random.default_rng(2)
    per_group = rng.normal(0, 5, 50)
    d = np.repeat(per_group, 10)
    groups = np.repeat(np.arange(50), 10).tolist()
    se_groups = np.std(per_group, ddof=1) / math.sqrt(50)
    assert pw.standard_error(d, groups) == pytest.approx(se_groups, rel=1e-9)
    assert pw.standard_error(d) < se_groups / 2.5


def test_influence_of_a_mean_and_of_the_token_weighted_loss():
    a = np.c_[np.array([10.0, 20.0, 60.0]), np.ones(3)]
    assert np.allclose(pw.influence(a), [-20.0, -10.0, 30.0])
    loss = np.c_[np.array([4.0, 2.0]), np.array([2.0, 2.0])]  # NLL sums over 2 tokens each: loss 1.5
    assert np.allclose(
        pw.influence(loss), [0.5, -0.5]
    )  # (2 - 1.5) x 2 tokens / 2 tokens a row and pw.influence(loss).mean() == pytest.approx(0.0)


def test_seeds_needed():
    assert pw.seeds_needed(1.0, 1.0, 1.0) == math.ceil(Z80**2 * 2)
    assert pw.seeds_needed(1.0, 1.0, 100.0) == 2 and pw.seeds_needed(math.nan, 1.0, 1.0) is None


def _write_scores(path, rows: dict[str, float], groups: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {
            "split": "test",
            "id": i,
            "loss_sum": 10.0,
            "tokens": 10,
            "rouge1": v,
            "rouge2": v,
            "rougeL": v,
            "exact_match": 0.0,
            "bleu_stats": [10, 10, 5, 3, 2, 1, 10, 9, 8, 7],
        }
        for i, v in rows.items()
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def _table(tmp_path, per_row: dict[str, np.ndarray], test_rows: list[dict] | None = None, **kw):
    from loraflow.report.settings import BootstrapSettings, TableInputs, TableOutputs, TableSettings
    from loraflow.report.table import write_comparison

    base = dict(BASE_METRICS)
    (tmp_path / "base").mkdir(parents=True, exist_ok=True)
    (tmp_path / "base/eval.json").write_text(json.dumps(base))
    n = len(next(iter(per_row.values())))
    _write_scores(tmp_path / "base/scores.jsonl", {f"t{i}": 10.0 for i in range(n)})
    runs, files = {}, ([], [], [])
    for k, (name, vals) in enumerate(per_row.items()):
        d = tmp_path / "runs" / name
        _write_scores(d / "scores.jsonl", {f"t{i}": float(v) for i, v in enumerate(vals)})
        write_train_stats(d / "train_stats.json")
        (d / "eval.json").write_text(
            json.dumps({**base, "rougeL": float(np.mean(vals)), "val": {**base, "rougeL": 50.0 - k}})
        )
        runs[name] = {
            "r": 4 * (k + 1),
            "lora_alpha": 8.0,
            "targets": "qv",
            "seed": 42,
            "point": name,
            "learning_rate": None,
        }
        files[0].append(str(d / "train_stats.json"))
        files[1].append(str(d / "eval.json"))
        files[2].append(str(d / "scores.jsonl"))
    rows_path = None
    if test_rows is not None:
        rows_path = tmp_path / "test.jsonl"
        rows_path.write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    inputs = TableInputs(
        str(tmp_path / "base/eval.json"),
        files[0],
        files[1],
        scores=files[2],
        base_scores=str(tmp_path / "base/scores.jsonl"),
        test_rows=None if rows_path is None else str(rows_path),
    )
    return write_comparison(
        inputs,
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("rougeL", BootstrapSettings(bootstrap_samples=1000, seed=3), **kw),
    )


def test_table_reports_p_best_mde_and_rows_needed(tmp_path):
    rng = np.random.default_rng(3)
    n = 120
    base = rng.uniform(0, 80, n)
    noise = rng.normal(0, 4, n)
    df = _table(tmp_path, {"r4_a8_qv": base + 0.2 + noise, "r8_a8_qv": base, "r12_a8_qv": base - 20})
    t = df.set_index("run")
    assert t.loc["r12_a8_qv", "p_best"] == 0.0 and t[["p_best"]].dropna().sum().item() == pytest.approx(1.0)
    md = (tmp_path / "c.md").read_text()
    d = (base + 0.2 + noise) - base
    mde = Z80 * np.std(d, ddof=1) / math.sqrt(n)
    assert f"is {mde:.2f} ROUGE-L" in md and "r4_a8_qv and r8_a8_qv" in md and "not separated" in md
    delta = d.mean()
    assert f"About {math.ceil(n * (mde / delta) ** 2):,} test rows like these" in md
    assert "**How sure**" in md and "P(best), test" in md


def test_table_clusters_rows_that_share_a_group(tmp_path):
    """Rows in groups of 8 with one score per group: the clustered intervals are wider than row-wise."""
    rng = np.random.default_rng(5)
    n = 160
    a = np.repeat(rng.uniform(0, 100, n // 8), 8)
    rows = [{"id": f"t{i}", "prompt": "q", "reference": "a", "meta": {"group": f"g{i // 8}"}} for i in range(n)]
    clustered = _table(tmp_path / "c", {"r4_a8_qv": a, "r8_a8_qv": a - 5}, rows).set_index("run")
    rowwise = _table(tmp_path / "r", {"r4_a8_qv": a, "r8_a8_qv": a - 5}, rows, cluster_by="none").set_index("run")
    width = lambda t: t.loc["r4_a8_qv", "rougeL_hi"] - t.loc["r4_a8_qv", "rougeL_lo"]  # noqa: E731
    assert width(clustered) > 2 * width(rowwise)
    assert "in 20 groups (table.cluster_by: group)" in (tmp_path / "c/c.md").read_text()
    assert "groups" not in (tmp_path / "r/c.md").read_text().split("## Selection")[0]


def test_seeds_needed_comes_from_the_spread_across_seeds(tmp_path):
    """Two grid points, two seeds each, close on test: the headline compares the points (mean over
    seeds) and gives the seeds per point that the spread of each point across its seeds calls for."""
    from loraflow.report.settings import BootstrapSettings, TableInputs, TableOutputs, TableSettings
    from loraflow.report.table import write_comparison

    rng = np.random.default_rng(8)
    n = 100
    base = rng.uniform(0, 80, n)
    per_row = {
        "r4_a8_qv": base + 1.0,
        "r4_a8_qv_s1": base + 3.0,
        "r8_a8_qv": base + 1.5 + rng.normal(0, 3, n),
        "r8_a8_qv_s1": base + 2.0,
    }
    _table(tmp_path, per_row)  # the stage files
    runs = {
        name: {
            "r": 4 if name.startswith("r4") else 8,
            "lora_alpha": 8.0,
            "targets": "qv",
            "seed": 1 if name.endswith("_s1") else 42,
            "point": name.removesuffix("_s1"),
            "learning_rate": None,
        }
        for name in per_row
    }
    files = [
        [str(tmp_path / "runs" / r / f) for r in per_row] for f in ("train_stats.json", "eval.json", "scores.jsonl")
    ]
    df = write_comparison(
        TableInputs(
            str(tmp_path / "base/eval.json"),
            files[0],
            files[1],
            scores=files[2],
            base_scores=str(tmp_path / "base/scores.jsonl"),
        ),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md"), str(tmp_path / "p.csv")),
        runs,
        TableSettings("rougeL", BootstrapSettings(bootstrap_samples=500)),
    )
    test = df.set_index("run")["rougeL"]
    mean = {p: test[[p, f"{p}_s1"]].mean() for p in ("r4_a8_qv", "r8_a8_qv")}
    sd = {p: test[[p, f"{p}_s1"]].std(ddof=1) for p in ("r4_a8_qv", "r8_a8_qv")}
    delta = mean["r4_a8_qv"] - mean["r8_a8_qv"]
    md = (tmp_path / "c.md").read_text()
    assert "the top two grid points (mean over seeds) on test, r4_a8_qv and r8_a8_qv" in md and "not separated" in md
    assert math.ceil(Z80**2 * (sd["r4_a8_qv"] ** 2 + sd["r8_a8_qv"] ** 2) / delta**2) == pw.seeds_needed(
        sd["r4_a8_qv"], sd["r8_a8_qv"], delta
    )
    assert (
        f"{pw.seeds_needed(sd['r4_a8_qv'], sd['r8_a8_qv'], delta)} seeds per point from the spread across seeds" in md
    )
    # the row-to-row part: per-row values of a point are the mean over its seeds
    d = (per_row["r4_a8_qv"] + per_row["r4_a8_qv_s1"]) / 2 - (per_row["r8_a8_qv"] + per_row["r8_a8_qv_s1"]) / 2
    assert f"is {Z80 * np.std(d, ddof=1) / math.sqrt(n):.2f} ROUGE-L" in md


def test_row_groups_from_the_split_rows(tmp_path):
    from loraflow.report.clusters import row_groups

    def split(rows):
        path = tmp_path / "test.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return str(path)

    # the built-in data: rows carry their facts (in meta after the data stages); the same answer is one group
    builtin = [
        {"id": "1", "prompt": "What does the X2 cost?", "reference": "The X2 costs $129.", "meta": {"facts": ["129"]}},
        {"id": "2", "prompt": "How much is the X2?", "reference": "The X2 costs $129.", "meta": {"facts": ["129"]}},
        {
            "id": "3",
            "prompt": "Is the Y1 available in red?",
            "reference": "The Y1 comes in red.",
            "meta": {"facts": ["red"]},
        },
    ]
    groups, key = row_groups(split(builtin))
    assert key == "reference" and groups["1"] == groups["2"] != groups["3"]
    assert row_groups(split(builtin), "none") == ({}, None)
    # a user's own group id wins; rows without the named field are groups of their own
    own = [
        {"id": "a", "reference": "x", "meta": {"group": "p1", "facts": ["1"]}},
        {"id": "b", "reference": "y", "group": "p1"},
        {"id": "c", "reference": "x"},
    ]
    groups, key = row_groups(split(own))
    assert key == "group" and groups["a"] == groups["b"] and groups["c"] == "row:c"
    # plain rows: no clusters; a missing file: none either
    assert row_groups(split([{"id": "a", "reference": "x"}])) == ({}, None) and row_groups(None) == ({}, None)
