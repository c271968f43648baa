"""Intruder dimensions: the count on constructed updates with a known answer, the rank-analysis
columns, peft's reduce_intruder_dimension as a run of its own, and its row in the table."""

import csv
import json

import pytest
import torch

from loraflow.config import ConfigError
from loraflow.evaluate.intruders import IntruderSettings, count_intruders
from loraflow.evaluate.rank_analysis import analyse_adapter
from loraflow.train.intruders import expand_reductions, reduce_intruders


def orthonormal(n: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).Q


def base_weight(n: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W = U diag(10 … 1) Vᵀ with random orthogonal U, V."""
    u, v = orthonormal(n, 1), orthonormal(n, 2)
    return u @ torch.diag(torch.linspace(10, 1, n, dtype=torch.float64)) @ v.T, u, v


def test_a_strong_update_between_base_directions_is_one_intruder():
    """ΔW = 40 · x v₁₆ᵀ with x spread evenly over 8 of W's left singular vectors and v₁₆ the base's
    weakest input direction: the tuned weight's top singular vector is ≈ x, whose |cosine| with every
    base singular vector is about 1/√8 ≈ 0.35 < 0.5."""
    w, u, v = base_weight()
    x = u[:, :8].sum(dim=1) / 8**0.5
    count, min_cos = count_intruders(w, 40 * torch.outer(x, v[:, 15]), IntruderSettings(top_k=10, threshold=0.5))
    assert count == 1 and min_cos == pytest.approx(8**-0.5, abs=0.05)


@pytest.mark.parametrize("delta", ["aligned", "small", "zero"])
def test_updates_along_base_directions_or_small_ones_have_no_intruder(delta):
    """Amplifying an existing direction, a small random update, or none: every top singular vector of
    the tuned weight stays close to one of the base's."""
    w, u, v = base_weight()
    d = {
        "aligned": 40 * torch.outer(u[:, 3], v[:, 3]),
        "small": 1e-3 * torch.randn(16, 16, dtype=torch.float64),
        "zero": torch.zeros(16, 16, dtype=torch.float64),
    }[delta]
    count, min_cos = count_intruders(w, d, IntruderSettings(top_k=10, threshold=0.5))
    assert count == 0 and min_cos > 0.9


def intruder_adapter(tiny_model, out_dir, scale: float = 100.0) -> str:
    """A LoRA adapter (r=2 on q_proj, v_proj) that is zero except in layer 0's q_proj, whose ΔW is a
    strong rank-1 update along x = the even mix of 8 of the base weight's left singular vectors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
        LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    u = torch.linalg.svd(layer.base_layer.weight.detach().double()).U
    x = (u[:, :8].sum(dim=1) / 8**0.5).float()
    y = torch.zeros(layer.base_layer.weight.shape[1])
    y[0] = 1.0
    sigma = float(torch.linalg.svdvals(layer.base_layer.weight.detach())[0])
    with torch.no_grad():
        layer.lora_B["default"].weight.zero_()
        layer.lora_B["default"].weight[:, 0] = x * scale * sigma
        layer.lora_A["default"].weight.zero_()
        layer.lora_A["default"].weight[0] = y
    model.save_pretrained(out_dir, safe_serialization=True)
    return str(out_dir)


def analyse(adapter, model_dir, tmp_path, **kw):
    paths = {k: str(tmp_path / f"{k}.out") for k in ("out_csv", "out_summary", "out_plot")}
    summary = analyse_adapter(adapter, **paths, model_dir=str(model_dir), **kw)
    with open(paths["out_csv"], newline="", encoding="utf-8") as fh:
        return summary, {row["name"]: row for row in csv.DictReader(fh)}


def test_rank_analysis_counts_the_intruder_where_it_was_put(tiny_model, tmp_path):
    summary, rows = analyse(intruder_adapter(tiny_model, tmp_path / "adapter"), tiny_model, tmp_path)
    hit = [name for name, row in rows.items() if row["intruders"] not in ("", "0")]
    assert hit == ["model.layers.0.self_attn.q_proj"] and rows[hit[0]]["intruders"] == "1"
    assert float(rows[hit[0]]["intruder_min_cos"]) < 0.5
    assert summary["intruders_total"] == 1 and summary["intruder_modules"] == 1
    assert summary["intruder_modules_analysed"] == len(rows)
    assert "1 intruder dimensions in 1 of" in summary["intruder_note"]
    summary, rows = analyse(str(tmp_path / "adapter"), tiny_model, tmp_path, intruder_top_k=0)
    assert summary["intruder_note"] == "intruder dimensions not analysed" and all(
        "intruders" not in r for r in rows.values()
    )


def delta(adapter_dir, name: str) -> torch.Tensor:
    from safetensors.torch import load_file

    t = load_file(f"{adapter_dir}/adapter_model.safetensors")
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    a, b = t[f"base_model.model.{name}.lora_A.weight"], t[f"base_model.model.{name}.lora_B.weight"]
    return cfg["lora_alpha"] / cfg["r"] * (b @ a)


@pytest.mark.parametrize("mitigation_lambda, left", [(0.0, 0), (1.0, 1)])
def test_reduction_removes_the_intruder_and_lambda_one_keeps_the_update(tiny_model, tmp_path, mitigation_lambda, left):
    """peft's reduction at lambda 0 removes the intruder (the reduced adapter has none); at lambda 1 it
    refits the same ΔW. The stats are the parent's plus what was reduced."""
    parent = tmp_path / "runs" / "r2_a2_qv"
    intruder_adapter(tiny_model, parent / "adapter")
    (parent / "train_stats.json").write_text(json.dumps({"r": 2, "steps": 4, "train_time_s": 1.0}))
    out = tmp_path / "runs" / "r2_a2_qv_ri"
    stats = reduce_intruders(
        str(tiny_model),
        str(parent / "adapter"),
        str(parent / "train_stats.json"),
        str(out / "adapter"),
        str(out / "train_stats.json"),
        {"top_k": 10, "threshold": 0.5, "mitigation_lambda": mitigation_lambda},
    )
    assert stats["reduced_from"] == "r2_a2_qv" and stats["intruders_reduced"] == 1 and stats["steps"] == 4
    assert (
        json.loads((out / "train_stats.json").read_text())["intruder_reduction"]["mitigation_lambda"]
        == mitigation_lambda
    )
    summary, _ = analyse(str(out / "adapter"), tiny_model, tmp_path)
    assert summary["intruders_total"] == left
    name = "model.layers.0.self_attn.q_proj"
    before, after = delta(parent / "adapter", name), delta(out / "adapter", name)
    if mitigation_lambda == 1.0:
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))
    else:
        assert float(after.norm()) < 0.05 * float(before.norm())


def test_reductions_are_runs_of_their_own_named_after_the_parent():
    runs = {
        "r4_a8_qv": {"point": "r4_a8_qv", "method": "lora", "r": 4},
        "r4_a8_qv_dora": {"point": "r4_a8_qv_dora", "method": "dora", "r": 4},
    }
    assert expand_reductions({}, runs) == {}
    out = expand_reductions({"reduce_intruders": {"runs": "all"}}, runs)
    assert out == {"r4_a8_qv_ri": {"point": "r4_a8_qv_ri", "method": "lora+ri", "r": 4, "reduced_from": "r4_a8_qv"}}
    with pytest.raises(ConfigError, match=r"reduce_intruders.runs: 'r9' is not a run"):
        expand_reductions({"reduce_intruders": {"runs": ["r9"]}}, runs)
    with pytest.raises(ConfigError, match="is a dora run"):
        expand_reductions({"reduce_intruders": {"runs": ["r4_a8_qv_dora"]}}, runs)
    with pytest.raises(ConfigError, match="intruder_top_k"):
        expand_reductions({"reduce_intruders": {"runs": "all"}, "rank_analysis": {"intruder_top_k": 0}}, runs)


@pytest.mark.slow
def test_a_reduced_run_reuses_the_trained_adapter_and_gets_a_row(finished_run, tiny_model, tmp_path):
    """Asking for a reduction on a finished sweep trains nothing: it reduces, evaluates and analyses the
    new adapter, and the table gets its row next to the parent's."""
    import shutil

    import pandas as pd

    from helpers import planned_jobs, snakemake, tiny_config, write_config

    first, _ = finished_run
    shutil.copytree(first, tmp_path, dirs_exist_ok=True)
    cfg = tiny_config(tiny_model)
    cfg["reduce_intruders"] = {"runs": ["r4_a8_qv"]}
    write_config(tmp_path, cfg)
    jobs = planned_jobs(tmp_path)
    assert "train" not in jobs and "preflight" not in jobs
    assert {k: jobs.get(k) for k in ("reduce_intruders", "evaluate", "rank_analysis", "table")} == dict.fromkeys(
        ("reduce_intruders", "evaluate", "rank_analysis", "table"), 1
    )
    snakemake(tmp_path, "--cores", "1", "--resources", "gpu=1")
    table = pd.read_csv(tmp_path / "results/comparison.csv").set_index("run")
    assert list(table.index) == ["base", "r2_a8_qv", "r4_a8_qv", "r4_a8_qv_ri"]
    assert table.loc["r4_a8_qv_ri", "method"] == "lora+ri" and table.loc["r4_a8_qv_ri", "status"] == "ok"
    assert table.loc["r4_a8_qv_ri", "r"] == table.loc["r4_a8_qv", "r"]
    stats = json.loads((tmp_path / "results/runs/r4_a8_qv_ri/train_stats.json").read_text())
    assert stats["reduced_from"] == "r4_a8_qv"
    summary = json.loads((tmp_path / "results/runs/r4_a8_qv/rank_summary.json").read_text())
    assert summary["intruder_modules_analysed"] > 0


def test_the_table_counts_intruders_and_keeps_reductions_out_of_the_grid_effects(tiny_model, tmp_path):
    """The comparison table shows each run's intruder count (from its rank summary); a `<run>_ri` row is
    a row of its own, not a level of the grid's method axis."""
    from helpers import hp, stage_files
    from loraflow.report.effects import point_axes
    from loraflow.report.settings import TableInputs, TableOutputs, TableSettings
    from loraflow.report.table import write_comparison

    runs = {"r2_a2_qv": hp(2, 2.0, 42), "r2_a2_qv_ri": {**hp(2, 2.0, 42, point="r2_a2_qv_ri"), "method": "lora+ri"}}
    files = stage_files(tmp_path, runs, {"r2_a2_qv": 30.0, "r2_a2_qv_ri": 29.0})
    summaries = []
    for name in runs:
        d = tmp_path / "runs" / name
        intruder_adapter(tiny_model, d / "adapter", scale=100.0 if name == "r2_a2_qv" else 0.0)
        analyse_adapter(
            str(d / "adapter"),
            str(d / "rank.csv"),
            str(d / "rank_summary.json"),
            str(d / "rank.png"),
            model_dir=str(tiny_model),
        )
        summaries.append(str(d / "rank_summary.json"))
    df = write_comparison(
        TableInputs(str(tmp_path / "base/eval.json"), *files, rank_summaries=summaries),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("rougeL"),
    )
    assert df.set_index("run").loc[["r2_a2_qv", "r2_a2_qv_ri"], "intruders"].tolist() == [1, 0]
    assert "`intruders`: singular vectors" in (tmp_path / "c.md").read_text()
    assert set(point_axes(df)) == {"r2_a2_qv"}
    assert "no intruder dimension found" not in (tmp_path / "c.md").read_text()
    # A reduction that found nothing is its parent's adapter again: the table says so.
    stats = tmp_path / "runs" / "r2_a2_qv_ri" / "train_stats.json"
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "intruders_reduced": 0}))
    df = write_comparison(
        TableInputs(str(tmp_path / "base/eval.json"), *files, rank_summaries=summaries),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("rougeL"),
    )
    assert df.set_index("run").loc["r2_a2_qv_ri", "intruders_reduced"] == 0
    assert "`r2_a2_qv_ri`: no intruder dimension found" in (tmp_path / "c.md").read_text()
