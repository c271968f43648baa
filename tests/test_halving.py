"""Successive halving (search.method: halving): the budgets and the cut as pure functions, a promoted point
ending bit-identical to a straight run, and the workflow (pruned rows, --cores 1 vs 2, the dry-run plan)."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from helpers import cut_history, halving_config
from loraflow.binding import bind, field_names
from loraflow.search.halving import cuts, keep_count, pruned_points, rung_budgets, select, survivors
from loraflow.train.bill import SweepSettings
from loraflow.train.grid_check import PreflightSettings

names = st.text("abcdefgh_0123456789", min_size=1, max_size=8)
losses = st.one_of(st.floats(min_value=0, max_value=20, allow_nan=False), st.just(math.nan), st.just(math.inf))


@given(st.dictionaries(names, losses, min_size=1, max_size=40), st.integers(2, 6), st.randoms())
def test_survivors_are_the_best_by_loss_then_name_whatever_the_order(scores, eta, rnd):
    kept = survivors(scores, eta)
    assert len(kept) == math.ceil(len(scores) / eta)
    shuffled = list(scores.items())
    rnd.shuffle(shuffled)
    assert survivors(dict(shuffled), eta) == kept  # the order results arrive in changes nothing

    def key(name):
        value = scores[name]
        return (0, value, name) if math.isfinite(value) else (1, 0.0, name)

    dropped = [name for name in scores if name not in kept]
    assert all(key(k) < key(d) for k in kept for d in dropped)  # every kept point ranks above every dropped one
    assert [key(k) for k in kept] == sorted(key(k) for k in kept)


kept_shares = st.one_of(st.none(), st.just(math.nan), st.floats(min_value=0, max_value=100, allow_nan=False))


@given(
    st.dictionaries(names, st.tuples(losses, kept_shares), min_size=1, max_size=40),
    st.integers(2, 6),
    st.floats(min_value=1, max_value=100),
    st.randoms(),
)
def test_a_floor_cut_keeps_the_points_that_hold_it_first_whatever_the_order(points, eta, floor, rnd):
    loss = {name: value[0] for name, value in points.items()}
    kept_share = {name: value[1] for name, value in points.items()}
    kept = survivors(loss, eta, kept_share, floor)
    assert len(kept) == math.ceil(len(points) / eta)
    shuffled = list(kept_share.items())
    rnd.shuffle(shuffled)
    assert survivors(loss, eta, dict(shuffled), floor) == kept  # arrival order changes nothing
    measured = {n: v for n, v in kept_share.items() if v is not None and math.isfinite(v)}
    if not measured:  # nothing measured (the base answered no validation item): the loss alone decides
        assert kept == survivors(loss, eta)
        return
    holds = {n for n, v in measured.items() if v >= floor}
    dropped = [n for n in points if n not in kept]
    if any(n not in holds for n in kept):  # a point under the floor goes on only when every holder does
        assert holds <= set(kept)
    held_and_dropped = [n for n in dropped if n in holds]
    for name in kept:  # among the holders, the loss ranks as without a floor
        if name in holds:
            assert all(survivors({name: loss[name], d: loss[d]}, 2) == [name] for d in held_and_dropped)
    under = [n for n in kept if n not in holds]
    for name in under:  # among the others, the most kept goes first
        assert all(measured.get(name, -math.inf) >= measured.get(d, -math.inf) for d in dropped if d not in holds)


def test_a_floor_cut_example():
    loss = {"a": 0.9, "b": 1.0, "c": 1.1, "d": 1.2}
    kept_share = {"a": 40.0, "b": 95.0, "c": 60.0, "d": 91.0}
    assert survivors(loss, 2) == ["a", "b"]  # the loss alone keeps a point that forgot most of what it knew
    assert survivors(loss, 2, kept_share, 90) == ["b", "d"]  # the two that hold 90 %
    assert survivors(loss, 2, kept_share, 99) == ["b", "d"]  # none holds 99 %: the most kept first
    assert survivors(loss, 2, dict.fromkeys(loss), 90) == ["a", "b"]  # nothing measured: no floor


def test_select_with_a_floor_names_it_in_the_history_and_the_pruned_status(tmp_path):
    from loraflow.report.halving import pruned_rows

    results = []
    for name, loss, kept_share in (("r4", 0.9, 40.0), ("r8", 1.0, 95.0), ("r16", 1.1, None)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"step": 2, "eval_loss": loss, "val_retention": kept_share}))
        results.append(str(path))
    info = select(0, 2, results, None, str(tmp_path / "select0.json"), eta=3, floor=90)
    assert info["survivors"] == ["r8"] and info["rungs"][0]["floor"] == 90
    grid = {name: {"r": int(name[1:]), "lora_alpha": 16, "targets": "qv"} for name in ("r4", "r8", "r16")}
    status = {row["run"]: row["status"] for row in pruned_rows(str(tmp_path / "select0.json"), grid)}
    assert status == {
        "r4": "pruned at step 2 (validation retention 40.0 % under the floor 90 %)",
        "r16": "pruned at step 2",  # not measured: cut by its rank, not by the floor
    }
    from loraflow.report.headline import headline

    rows = pd.DataFrame(
        [{"run": "base", "status": "ok", "best": ""}, *pruned_rows(str(tmp_path / "select0.json"), grid)]
    )
    text = headline(rows, "rougeL", None, pd.DataFrame(), None)
    assert "stopped 2 of 2 runs early on their validation loss, 1 of them under the retention floor" in text


@given(st.integers(1, 2000), st.integers(2, 6), st.integers(1, 100), st.integers(0, 5000))
def test_budgets_grow_by_eta_and_stay_below_the_run(n, eta, min_steps, max_steps):
    budgets = rung_budgets(n, eta, min_steps, max_steps)
    assert budgets == [min_steps * eta**k for k in range(len(budgets))]
    assert len(budgets) <= cuts(n, eta)
    if max_steps:
        assert all(b < max_steps for b in budgets)
        assert len(budgets) == cuts(n, eta) or min_steps * eta ** len(budgets) >= max_steps
    live = n
    for _ in range(cuts(n, eta)):
        live = keep_count(live, eta)
    assert live == 1 and (n == 1 or keep_count(n, eta) < n)  # the cuts take the points down to one


def test_budgets_example():
    assert rung_budgets(16, 3, 20, 0) == [20, 60, 180]  # 16 -> 6 -> 2 -> 1
    assert rung_budgets(16, 3, 20, 60) == [20]  # 60 would be the whole run: the final training does it
    assert rung_budgets(4, 2, 2, 8) == [2, 4] and rung_budgets(1, 3, 20, 60) == []


@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=2, max_size=12), st.integers(2, 4))
@settings(max_examples=30, deadline=None)
def test_select_history_names_every_pruned_point_once(tmp_path_factory, values, eta):
    tmp = tmp_path_factory.mktemp("select")
    live, previous = [f"p{i:02d}" for i in range(len(values))], None
    loss = dict(zip(live, values))
    step = 2
    for rung in range(cuts(len(values), eta)):
        results = []
        for name in live:
            (tmp / f"rung{rung}").mkdir(exist_ok=True)
            path = tmp / f"rung{rung}" / f"{name}.json"
            path.write_text(json.dumps({"step": step, "eval_loss": loss[name] / (rung + 1)}))
            results.append(str(path))
        info = select(rung, step, results, previous, str(tmp / f"select{rung}.json"), eta)
        assert info["survivors"] == survivors({n: loss[n] / (rung + 1) for n in live}, eta)
        live, previous, step = info["survivors"], str(tmp / f"select{rung}.json"), step * eta
    pruned = pruned_points(json.loads((tmp / f"select{rung}.json").read_text()))
    assert len(live) == 1 and set(pruned) | set(live) == set(loss) and not set(pruned) & set(live)


# --- a promoted point ends as a straight run ----------------------------------------------------------

ARGS = dict(
    r=4,
    lora_alpha=8,
    target_modules=["q_proj", "v_proj"],
    max_steps=12,
    batch_size=2,
    eval_every=4,
    learning_rate=0.01,
    lora_dropout=0.1,
    threads=1,
    seed=5,
    checkpoint_every=0,
)


def data_args(tiny_data) -> dict:
    d, npz = tiny_data
    return dict(model_dir=str(d["model"]), train_path=npz[0], val_path=npz[1], tokens_meta=str(d["meta"]), **ARGS)


def outputs(out) -> dict:
    return dict(out_adapter=str(out / "adapter"), out_log=str(out / "log.csv"), out_stats=str(out / "stats.json"))


def test_promoted_point_ends_bit_identical_to_a_straight_run(tiny_data, tmp_path):
    from loraflow.search.halving import train_rung
    from loraflow.tasks.causal_lm.train import train_lora

    args = data_args(tiny_data)
    straight = train_lora(**bind(train_lora, dict(**args, **outputs(tmp_path / "straight"))))
    # rungs at steps 3 and 6: neither is a validation step of the run, so each piece validates on its own
    r0 = train_rung(3, str(tmp_path / "rung0" / "p"), str(tmp_path / "rung0" / "p.json"), **args)
    r1 = train_rung(
        6,
        str(tmp_path / "rung1" / "p"),
        str(tmp_path / "rung1" / "p.json"),
        resume_from=str(tmp_path / "rung0" / "p"),
        **{**args, "checkpoint_every": 2, "checkpoint_dir": str(tmp_path / "own")},
    )  # own checkpoints change nothing
    assert (r0["step"], r1["step"]) == (3, 6) and r0["planned_steps"] == r1["planned_steps"] == 12
    assert r0["tokens_seen"] < r1["tokens_seen"] and math.isfinite(r1["eval_loss"])
    promoted = train_lora(
        **bind(train_lora, dict(**args, **outputs(tmp_path / "promoted"), resume_from=str(tmp_path / "rung1" / "p")))
    )

    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "promoted" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a = pd.read_csv(tmp_path / "straight" / "log.csv").drop(columns="elapsed_s")
    log_b = pd.read_csv(tmp_path / "promoted" / "log.csv").drop(columns="elapsed_s")
    pd.testing.assert_frame_equal(log_a, log_b)  # the pieces' own validations are not in the log
    assert (
        promoted["best_eval_loss"] == straight["best_eval_loss"] and promoted["tokens_seen"] == straight["tokens_seen"]
    )
    assert not (tmp_path / "own").exists()


def test_a_rung_with_a_floor_asks_only_the_validation_items_the_base_answered(tiny_data, tmp_path):
    """train_rung's retention check: the point, reloaded as the evaluate stage loads it, is asked the
    validation part of the items the base model answered correctly, never the test part."""
    from loraflow.evaluate.retention import load_items, retention_part
    from loraflow.search.halving import train_rung

    items = load_items(40)
    val_ids = [it["id"] for it in items if retention_part(it["id"]) == "val"][:5]
    test_ids = [it["id"] for it in items if retention_part(it["id"]) == "test"][:3]
    wrong = [it["id"] for it in items if retention_part(it["id"]) == "val"][5:7]
    base_scores = tmp_path / "base_scores.jsonl"
    base_scores.write_text(
        "".join(
            json.dumps({"split": "retention", "id": i, "correct": 0.0 if i in wrong else 100.0}) + "\n"
            for i in [*val_ids, *test_ids, *wrong]
        )
        + json.dumps({"split": "test", "id": "0", "correct": 100.0})
        + "\n"
    )
    pool = {**data_args(tiny_data), "retention_items": 40, "retention_max_new_tokens": 3, "retention_batch_size": 4}
    paths = {"out_checkpoint": str(tmp_path / "rung0"), "out_result": str(tmp_path / "rung0.json")}
    # as the rule passes them: one flat pool, grouped by the signature (the check's keys into RungRetention)
    result = train_rung(**bind(train_rung, {**pool, **paths, "stop_at": 2, "base_scores": str(base_scores)}))
    assert result["val_retention_items"] == 5 and 0.0 <= result["val_retention"] <= 100.0
    assert json.loads((tmp_path / "rung0.json").read_text())["val_retention_items"] == 5
    plain = train_rung(2, str(tmp_path / "p0"), str(tmp_path / "p0.json"), **data_args(tiny_data))
    assert "val_retention" not in plain and plain["eval_loss"] == result["eval_loss"]  # the check trains nothing


def test_a_checkpoint_of_other_settings_is_refused(tiny_data, tmp_path):
    from loraflow.search.halving import train_rung
    from loraflow.tasks.causal_lm.train import train_lora

    args = data_args(tiny_data)
    train_rung(2, str(tmp_path / "rung0"), str(tmp_path / "rung0.json"), **args)
    with pytest.raises(ValueError, match="other settings or data"):
        train_lora(
            **bind(
                train_lora,
                dict(
                    **{**args, "learning_rate": 0.02},
                    **outputs(tmp_path / "other"),
                    resume_from=str(tmp_path / "rung0"),
                ),
            )
        )
    assert (tmp_path / "rung0" / "state.json").is_file()  # another job's output: never removed here


# --- the workflow -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def halving_runs(tmp_path_factory, tiny_model, halving_local):
    """The 4-point halving sweep run to its table with --cores 1 (conftest, read only) and with --cores 2:
    {cores: workdir}."""
    from helpers import snakemake, write_config

    workdir = tmp_path_factory.mktemp("halving2")
    write_config(workdir, halving_config(tiny_model))
    snakemake(workdir, "results/comparison.md", "--cores", "2", "--resources", "gpu=1")
    return {1: halving_local, 2: workdir}


def table_jobs(workdir) -> dict[str, int]:
    """{rule: count} that a dry run for the table would execute."""
    import re

    from helpers import snakemake

    out = snakemake(workdir, "results/comparison.md", "-n", "--quiet", "rules").stdout
    return {
        m.group(1): int(m.group(2))
        for line in out.splitlines()
        if (m := re.match(r"^(\w+)\s+(\d+)$", line.strip())) and m.group(1) != "total"
    }


@pytest.mark.slow
def test_plan_before_the_first_cut(tmp_path, tiny_model):
    from helpers import planned_jobs, write_config

    write_config(tmp_path, halving_config(tiny_model))
    jobs = planned_jobs(tmp_path)
    assert jobs["halving_rung"] == 4 and "train" not in jobs and "evaluate" not in jobs  # the rest waits for the cuts


@pytest.mark.slow
def test_a_floor_makes_every_rung_wait_for_the_base_models_retention(tmp_path, tiny_model):
    """With table.retention_floor the rungs read the base's scores (the items it answers) and the cut its
    floor; without one, neither (a sweep's params stay as they were)."""
    from helpers import snakemake, write_config

    def rung_blocks(config) -> list[str]:
        write_config(tmp_path, config)
        out = snakemake(tmp_path, "-n").stdout
        return [b for b in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", out) if "rule halving_rung:" in b]

    config = halving_config(tiny_model)
    assert all("base/scores.jsonl" not in block for block in rung_blocks(config))
    config["table"] = {"retention_floor": 80}
    blocks = rung_blocks(config)
    assert len(blocks) == 4 and all("results/base/scores.jsonl" in block for block in blocks)


@pytest.mark.slow
def test_cores_1_and_2_keep_the_same_points_and_adapters(halving_runs):
    one, two = halving_runs[1], halving_runs[2]
    assert cut_history(one) == cut_history(two)
    kept = cut_history(one)["survivors"]
    assert len(kept) == 1
    for workdir in (one, two):
        trained = sorted(
            p.parent.parent.name for p in (workdir / "results" / "runs").glob("*/adapter/adapter_model.safetensors")
        )
        assert trained == kept  # pruned points are never trained to the end
    a = load_file(one / "results" / "runs" / kept[0] / "adapter" / "adapter_model.safetensors")
    b = load_file(two / "results" / "runs" / kept[0] / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_search_calibrate_reaches_the_preflight_and_prices_the_halving_sweep(halving_runs):
    """search.calibrate always (helpers.halving_config) prices the 8-step sweep that auto would leave
    unpriced: each point's training time, and the sweep's rung plan under halving."""
    res = halving_runs[1] / "results"
    points = cut_history(halving_runs[1])["rungs"][0]["points"]
    for run in points:
        info = json.loads((res / "runs" / run / "preflight.json").read_text())
        assert info["planned_steps"] == 8 and info["est_train_time_s"] > 0 and info["calibrated_peak_memory_mb"] > 0
        assert info["sweep"]["search"] == "halving" and info["sweep"]["jobs"] == [[4, 0, 2], [2, 2, 4], [1, 4, 8]]
    log = (res / "logs" / "preflight.log").read_text()
    assert "under halving" in log
    # every setting of the check and the bill reaches the job from the config (the rule derives its keys
    # from these classes), save the calibration's own step count
    call = next(line for line in log.splitlines() if "preflight.preflight_grid(" in line)
    passed = set(re.findall(r"[(, ](\w+)=", call))
    assert set(field_names(PreflightSettings) + field_names(SweepSettings)) - passed == {"calibration_steps"}


@pytest.mark.slow
def test_pruned_points_keep_their_row(halving_runs):
    res = halving_runs[1] / "results"
    history = cut_history(halving_runs[1])
    table = pd.read_csv(res / "comparison.csv").set_index("run")
    pruned = pruned_points(history)
    assert set(table.index) == {"base", *history["rungs"][0]["points"]} and len(pruned) == 3
    for name, result in pruned.items():
        assert table.loc[name, "status"] == f"pruned at step {result['step']}"
        assert table.loc[name, "val_loss"] == pytest.approx(result["eval_loss"])
        assert pd.isna(table.loc[name, "test_loss"]) and pd.isna(table.loc[name, "rougeL"])  # never evaluated
        assert not (res / "runs" / name / "eval.json").exists()
    kept = history["survivors"][0]
    assert table.loc[kept, "status"] == "ok" and str(table.loc[kept, "best"]).startswith("best")
    assert "pruned at step" in (res / "comparison.md").read_text()


@pytest.mark.slow
def test_halving_figure(halving_runs, tmp_path):
    from loraflow.report.halving import curves, plot_halving

    res = halving_runs[1] / "results"
    history = cut_history(halving_runs[1])
    kept = history["survivors"][0]
    plot_halving(
        str(res / "search" / "select1.json"),
        str(tmp_path / "halving.png"),
        [str(res / "runs" / kept / "train_stats.json")],
    )
    assert (tmp_path / "halving.png").read_bytes()[:4] == b"\x89PNG"
    steps = {name: [s for s, _ in points] for name, points in curves(history).items()}
    assert steps[kept] == [2, 4] and sorted(len(s) for s in steps.values()) == [1, 1, 2, 2]


@pytest.mark.slow
def test_rerun_and_lost_evidence(halving_runs):
    """Nothing to do on a rerun; a survivor's lost evaluation makes the plan rebuild it and the table, which
    ends as it was."""
    from helpers import snakemake

    workdir = halving_runs[2]
    res = workdir / "results"
    assert table_jobs(workdir) == {}
    before = pd.read_csv(res / "comparison.csv")
    kept = cut_history(workdir)["survivors"][0]
    (res / "runs" / kept / "eval.json").unlink()  # as a kill during its evaluation leaves it
    jobs = table_jobs(workdir)
    assert jobs.get("evaluate") == 1 and jobs.get("table") == 1 and "halving_rung" not in jobs and "train" not in jobs
    snakemake(workdir, "results/comparison.md", "--cores", "2", "--resources", "gpu=1")
    after = pd.read_csv(res / "comparison.csv")
    pd.testing.assert_frame_equal(before.drop(columns=["train_time_s"]), after.drop(columns=["train_time_s"]))
