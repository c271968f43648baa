"""Rank analysis stage: exact spectra of ΔW = s·B·A from a saved peft adapter, effective ranks at
energy thresholds, the suggested r and the verdict, on real peft adapters of the tiny Llama."""

from __future__ import annotations

import csv
import inspect
import json
import math
import re

import pytest
import torch

from helpers import REPO
from loraflow.evaluate.rank_analysis import analyse_adapter, effective_rank, energy_label, lora_singular_values

# Designed singular values of ΔW per (layer, module). Energy shares (σ² cumulative):
#   (4, 1):          16/17 = 0.941, 1            -> eff_rank_90 = 1, eff_rank_99 = 2
#   (5, 4, 3, 2, 1): 25, 41, 50, 54, 55 of 55    -> 0.455, 0.745, 0.909, 0.982, 1 -> 90: 3, 99: 5
#   (2,):            rank 1                      -> 1, 1
#   (1, 1, 1):       1/3, 2/3, 1                 -> 3, 3
DESIGN = {
    (0, "q_proj"): [4.0, 1.0],
    (0, "v_proj"): [5.0, 4.0, 3.0, 2.0, 1.0],
    (1, "q_proj"): [2.0],
    (1, "v_proj"): [1.0, 1.0, 1.0],
}
EXPECTED = {(0, "q_proj"): (1, 2), (0, "v_proj"): (3, 5), (1, "q_proj"): (1, 1), (1, "v_proj"): (3, 3)}


def peft_model(tiny_model, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    return get_peft_model(base, LoraConfig(target_modules=["q_proj", "v_proj"], lora_dropout=0.0, **lora))


def lora_layers(model):
    """{(layer, short name): peft LoRA layer}."""
    return {
        (int(re.search(r"layers\.(\d+)\.", n)[1]), n.rsplit(".", 1)[-1]): m
        for n, m in model.named_modules()
        if hasattr(m, "lora_A") and "default" in m.lora_A
    }


def set_spectrum(layer, sigma: list[float], seed: int) -> None:
    """Give ΔW = s·B·A exactly the singular values `sigma`: B = U diag(σ/s), A = Vᵀ (zero-padded to r)."""
    gen = torch.Generator().manual_seed(seed)
    A, B, s = layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.scaling["default"]
    r, k = A.shape[0], len(sigma)
    u = torch.linalg.qr(torch.randn(B.shape[0], k, generator=gen, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(A.shape[1], k, generator=gen, dtype=torch.float64)).Q
    new_b, new_a = torch.zeros(B.shape, dtype=torch.float64), torch.zeros(A.shape, dtype=torch.float64)
    new_b[:, :k] = u * (torch.tensor(sigma, dtype=torch.float64) / s)
    new_a[:k, :] = v.T
    with torch.no_grad():
        B.copy_(new_b)
        A.copy_(new_a)
    assert r >= k


def designed_adapter(tiny_model, out_dir, r: int, use_rslora: bool = False, lora_alpha: int = 16):
    model = peft_model(tiny_model, r=r, lora_alpha=lora_alpha, use_rslora=use_rslora)
    for i, (key, layer) in enumerate(sorted(lora_layers(model).items())):
        set_spectrum(layer, DESIGN[key], seed=i)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def run(adapter_dir, tmp_path, **kw):
    paths = {k: str(tmp_path / f"out.{k}") for k in ("out_csv", "out_summary", "out_plot")}
    summary = analyse_adapter(str(adapter_dir), **paths, **kw)
    with open(paths["out_csv"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return summary, rows, paths


def by_key(rows):
    return {(int(row["layer"]), row["module"]): row for row in rows}


def test_qr_route_matches_explicit_svd():
    gen = torch.Generator().manual_seed(0)
    for out_f, in_f, r, s in [
        (32, 24, 8, 2.0),
        (4, 40, 8, 0.5),
        (40, 3, 8, 1.0),
        (16, 16, 16, 4.0),
    ]:  # incl. out < r, in < r
        A = torch.randn(r, in_f, generator=gen, dtype=torch.float64)
        B = torch.randn(out_f, r, generator=gen, dtype=torch.float64)
        expected = torch.linalg.svdvals(s * B @ A)[: min(out_f, in_f, r)]
        torch.testing.assert_close(lora_singular_values(A, B, s), expected, rtol=1e-10, atol=1e-10)
    A32, B32 = (
        torch.randn(8, 24, generator=gen),
        torch.randn(32, 8, generator=gen),
    )  # float32 input is computed in float64
    assert lora_singular_values(A32, B32, 1.0).dtype == torch.float64


def test_effective_rank_definition():
    sigma = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert [effective_rank(sigma, e) for e in (0.4, 0.5, 0.9, 0.95, 0.99, 1.0)] == [1, 2, 3, 4, 5, 5]
    assert effective_rank(torch.tensor([3.0, 1.0]), 0.9) == 1  # exactly 90 %: the boundary counts
    assert effective_rank(torch.tensor([2.0, 0.0, 0.0]), 1.0) == 1
    assert effective_rank(torch.zeros(4), 0.99) == 0
    assert [energy_label(e) for e in (0.9, 0.99, 0.995, 1.0, 0.5)] == ["90", "99", "99.5", "100", "50"]


@pytest.mark.parametrize("r", [8, 16])
def test_designed_adapter(tiny_model, tmp_path, r):
    model = designed_adapter(tiny_model, tmp_path / "adapter", r=r)
    summary, rows, paths = run(tmp_path / "adapter", tmp_path)

    assert [c for c in rows[0]] == [
        "layer",
        "module",
        "name",
        "r",
        "scaling",
        "sigma_max",
        "fro_norm",
        "eff_rank_90",
        "eff_rank_99",
        "sigma_norm",
    ]
    assert [(row["layer"], row["module"]) for row in rows] == [
        ("0", "q_proj"),
        ("0", "v_proj"),
        ("1", "q_proj"),
        ("1", "v_proj"),
    ]
    assert rows[0]["name"] == "model.layers.0.self_attn.q_proj"
    layers = lora_layers(model)
    for key, row in by_key(rows).items():
        assert (int(row["eff_rank_90"]), int(row["eff_rank_99"])) == EXPECTED[key], key
        assert int(row["r"]) == r and float(row["scaling"]) == pytest.approx(16 / r)
        sigma = DESIGN[key]
        assert float(row["sigma_max"]) == pytest.approx(sigma[0], rel=1e-5)
        assert float(row["fro_norm"]) == pytest.approx(math.sqrt(sum(x * x for x in sigma)), rel=1e-5)
        norm = [float(x) for x in row["sigma_norm"].split(";")]
        assert len(norm) == r  # min(r, out, in); the tiny v_proj has out = 16 >= r
        assert norm[: len(sigma)] == pytest.approx([x / sigma[0] for x in sigma], rel=1e-5)
        assert max(norm[len(sigma) :], default=0.0) < 1e-6  # exact low rank: the rest is rounding noise
        # the QR route against peft's own ΔW (its scaling convention included), made explicit
        explicit = torch.linalg.svdvals(layers[key].get_delta_weight("default").detach().double())[:r]
        assert [x * explicit[0].item() for x in norm] == pytest.approx(explicit.tolist(), abs=1e-5)

    assert summary["r"] == r and summary["lora_alpha"] == 16 and summary["n_modules"] == 4
    assert summary["use_rslora"] is False and summary["use_dora"] is False and summary["note"] == ""
    assert summary["eff_rank_90_max"] == 3 and summary["eff_rank_90_median"] == 2
    assert summary["eff_rank_99_max"] == 5 and summary["eff_rank_99_median"] == 2.5
    assert summary["suggested_r"] == 8
    assert summary["smaller_r_would_suffice"] is (r == 16)
    if r == 16:
        assert (
            summary["verdict"]
            == "r=16: 99% of the update energy fits in rank ≤ 5 in every module; r=8 would have sufficed"
        )
    else:
        assert summary["verdict"].startswith("r=8: 99% of the update energy needs rank 5 in some module (median 2.5)")
    assert json.loads((tmp_path / "out.out_summary").read_text(encoding="utf-8")) == summary
    png = (tmp_path / "out.out_plot").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_rslora_scaling_and_energies(tiny_model, tmp_path):
    """rsLoRA scales by alpha/sqrt(r): reading the adapter with alpha/r would halve every σ here."""
    designed_adapter(tiny_model, tmp_path / "adapter", r=16, use_rslora=True, lora_alpha=16)
    summary, rows, _ = run(tmp_path / "adapter", tmp_path, energies=[0.995, 0.5])
    assert summary["use_rslora"] is True and summary["energies"] == [0.5, 0.995]
    assert list(rows[0])[7:9] == ["eff_rank_50", "eff_rank_99.5"]
    for key, row in by_key(rows).items():
        assert float(row["scaling"]) == pytest.approx(16 / math.sqrt(16))
        assert float(row["sigma_max"]) == pytest.approx(DESIGN[key][0], rel=1e-5)
    assert by_key(rows)[(0, "v_proj")]["eff_rank_50"] == "2" and by_key(rows)[(0, "v_proj")]["eff_rank_99.5"] == "5"
    assert (
        summary["eff_rank_99.5_max"] == 5 and summary["suggested_r"] == 8 and summary["smaller_r_would_suffice"] is True
    )
    assert summary["verdict"].startswith("r=16: 99.5% of the update energy fits in rank ≤ 5")


def test_fresh_adapter_is_zero_not_nan(tiny_model, tmp_path):
    """peft initialises lora_B = 0, so ΔW = 0: effective rank 0, spectra 0, no division by zero."""
    peft_model(tiny_model, r=8, lora_alpha=16).save_pretrained(tmp_path / "adapter", safe_serialization=True)
    summary, rows, paths = run(tmp_path / "adapter", tmp_path)
    assert len(rows) == 4
    for row in rows:
        assert row["eff_rank_90"] == row["eff_rank_99"] == "0"
        assert float(row["sigma_max"]) == 0.0 and float(row["fro_norm"]) == 0.0
        assert row["sigma_norm"] == ";".join(["0"] * 8)
    assert summary["n_zero_modules"] == 4
    assert summary["eff_rank_99_max"] == 0 and summary["eff_rank_90_median"] == 0
    assert summary["suggested_r"] == 1 and "ΔW = 0 in every module" in summary["verdict"]
    assert "nan" not in json.dumps(summary).lower()
    assert (tmp_path / "out.out_plot").stat().st_size > 5_000


def test_dora_rank_and_alpha_patterns(tiny_model, tmp_path):
    """Per-module r/alpha (peft rank_pattern/alpha_pattern) and DoRA magnitude vectors, checked
    against the scaling and ΔW of peft's own layers."""
    model = peft_model(
        tiny_model,
        r=8,
        lora_alpha=16,
        use_dora=True,
        rank_pattern={"v_proj": 4},
        alpha_pattern={"layers.1.self_attn.q_proj": 64},
    )
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B["default"].weight.normal_(generator=gen)
    model.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    summary, rows, _ = run(tmp_path / "adapter", tmp_path)
    layers = lora_layers(model)
    for key, row in by_key(rows).items():
        layer = layers[key]
        assert int(row["r"]) == layer.r["default"] == (4 if key[1] == "v_proj" else 8)
        assert float(row["scaling"]) == pytest.approx(layer.scaling["default"])
        explicit = torch.linalg.svdvals(layer.get_delta_weight("default").detach().double())
        assert float(row["sigma_max"]) == pytest.approx(explicit[0].item(), rel=1e-5)
        assert float(row["fro_norm"]) == pytest.approx(torch.linalg.vector_norm(explicit).item(), rel=1e-5)
    assert float(by_key(rows)[(1, "q_proj")]["scaling"]) == pytest.approx(8.0)  # alpha 64 / r 8
    assert summary["use_dora"] is True and "magnitude" in summary["note"]
    assert summary["r_max"] == 8 and summary["suggested_r"] <= 8


def test_hand_written_adapter_other_keys(tmp_path):
    """bf16 weights, keys that are not LoRA pairs (DoRA magnitude, lora bias, modules_to_save, an
    orphan lora_A), a module without a layer index and an embedding LoRA are all handled."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    p = "base_model.model."
    tensors = {
        f"{p}model.layers.3.mlp.down_proj.lora_A.weight": torch.randn(4, 12, generator=gen),
        f"{p}model.layers.3.mlp.down_proj.lora_B.weight": torch.randn(10, 4, generator=gen),
        f"{p}model.layers.3.mlp.down_proj.lora_B.bias": torch.randn(10, generator=gen),
        f"{p}model.layers.3.mlp.down_proj.lora_magnitude_vector": torch.ones(10),
        f"{p}lm_head.lora_A.weight": torch.randn(4, 12, generator=gen),
        f"{p}lm_head.lora_B.weight": torch.zeros(20, 4),
        f"{p}model.embed_tokens.lora_embedding_A": torch.randn(4, 20, generator=gen),
        f"{p}model.embed_tokens.lora_embedding_B": torch.randn(12, 4, generator=gen),
        f"{p}score.modules_to_save.default.weight": torch.randn(2, 12, generator=gen),
        f"{p}model.layers.4.self_attn.o_proj.lora_A.weight": torch.randn(4, 12, generator=gen),
    }
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "alpha_pattern": {"down_proj": 2}, "use_rslora": False}
        )
    )
    summary, rows, _ = run(adapter, tmp_path)
    assert [(row["layer"], row["module"]) for row in rows] == [
        ("", "embed_tokens"),
        ("", "lm_head"),
        ("3", "down_proj"),
    ]
    down = rows[2]
    assert float(down["scaling"]) == 0.5
    a = tensors[f"{p}model.layers.3.mlp.down_proj.lora_A.weight"].to(torch.bfloat16).double()
    b = tensors[f"{p}model.layers.3.mlp.down_proj.lora_B.weight"].to(torch.bfloat16).double()
    assert float(down["sigma_max"]) == pytest.approx(torch.linalg.svdvals(0.5 * b @ a)[0].item(), rel=1e-5)
    assert rows[1]["eff_rank_99"] == "0" and int(rows[0]["eff_rank_99"]) >= 1
    assert summary["n_modules"] == 3 and summary["n_zero_modules"] == 1 and summary["use_dora"] is False

    with pytest.raises(ValueError, match="energies"):
        run(adapter, tmp_path, energies=[0.9, 1.5])
    (tmp_path / "full").mkdir()
    with pytest.raises(FileNotFoundError, match="no peft adapter"):
        run(tmp_path / "full", tmp_path)


def test_rule_matches_stage_signature():
    """The rule names its input/output/params exactly like analyse_adapter's arguments."""
    rule = (REPO / "workflow" / "rules" / "rank_analysis.smk").read_text(encoding="utf-8")
    # a directive's entries; hp=settings(...): by name
    names = set(re.findall(r"^ {8}(\w+)=", rule, flags=re.M)) - {"hp"}
    names |= set(re.findall(r'"(\w+)"', " ".join(re.findall(r"pick\(.*?,\s*\[([^\]]*)\]", rule))))
    assert names == set(inspect.signature(analyse_adapter).parameters)
    script = (REPO / "workflow" / "scripts" / "rank_analysis.py").read_text(encoding="utf-8")
    assert 'call_stage(snakemake, "loraflow.evaluate.rank_analysis", "analyse_adapter")' in script
    assert (REPO / "workflow" / "report" / "rank_analysis.rst").is_file()


def test_table_shows_effective_rank_and_says_when_a_smaller_r_suffices(tiny_model, tmp_path):
    """The comparison table reads the rank summaries: eff_rank / suggested_r columns and a note."""
    from helpers import hp, stage_files
    from loraflow.report.settings import TableInputs, TableOutputs, TableSettings
    from loraflow.report.table import write_comparison

    runs = {"r8_a16_qv": hp(8, 16.0, 42), "r16_a16_qv": hp(16, 16.0, 42)}
    files = stage_files(tmp_path, runs, {"r8_a16_qv": 30.0, "r16_a16_qv": 31.0})
    summaries = []
    for name, h in runs.items():
        d = tmp_path / "runs" / name
        designed_adapter(tiny_model, d / "adapter", r=h["r"])
        analyse_adapter(str(d / "adapter"), str(d / "rank.csv"), str(d / "rank_summary.json"), str(d / "rank.png"))
        summaries.append(str(d / "rank_summary.json"))
    df = write_comparison(
        TableInputs(str(tmp_path / "base/eval.json"), *files, rank_summaries=summaries),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("rougeL"),
    ).set_index("run")
    assert df.loc["r8_a16_qv", "eff_rank"] == 5 and df.loc["r16_a16_qv", "suggested_r"] == 8
    md = (tmp_path / "c.md").read_text()
    assert "| eff_rank | suggested_r |" in md
    assert "A smaller r would have sufficed for: r16_a16_qv (r=16 → 8)." in md
