"""Every grid method on the tiny model: LoRA variants, QLoRA / 8-bit (bitsandbytes on CPU) and full
fine-tuning train, learn, save what they should, and go through evaluate / merge / table."""

import json

import pandas as pd
import pytest
import torch

from loraflow.binding import bind
from loraflow.evaluate.loading import load_for_eval
from loraflow.evaluate.run import evaluate_model
from loraflow.evaluate.settings import EvalPaths, EvalSettings
from loraflow.report.settings import TableInputs, TableOutputs, TableSettings
from loraflow.report.table import write_comparison
from loraflow.ship.merge import merge_adapter
from loraflow.ship.settings import MergeSettings
from loraflow.tasks.causal_lm.train import train_lora
from loraflow.train.grid_check import PreflightSettings, lora_counts, meta_model
from loraflow.train.preflight import preflight_run

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    """The tiny Llama with 64-wide layers: bitsandbytes quantises in blocks of 64 (same tokenizer as
    the session's tiny model, so the tokenised fixture data fits it)."""
    from helpers import build_tiny_model, synth_corpus

    return build_tiny_model(tmp_path_factory.mktemp("tiny64") / "model", synth_corpus(), hidden_size=64)


BASE_ARGS = dict(
    r=4,
    lora_alpha=8,
    target_modules="qv",
    max_steps=12,
    batch_size=4,
    eval_every=1,
    learning_rate=0.02,
    learning_rate_full=0.003,
    lora_dropout=0.0,
    threads=1,
    seed=3,
)


@pytest.fixture(scope="module")
def trained(tiny_data, model64, tmp_path_factory):
    """One run per method: {method: (run dir, train stats)}."""
    paths, npz = tiny_data
    root = tmp_path_factory.mktemp("methods")
    out = {}
    for method in ("lora", "dora", "rslora", "qlora", "lora_8bit", "full"):
        d = root / method
        stats = train_lora(
            **bind(
                train_lora,
                dict(
                    model_dir=str(model64),
                    train_path=npz[0],
                    val_path=npz[1],
                    tokens_meta=str(paths["meta"]),
                    out_adapter=str(d / "adapter"),
                    out_log=str(d / "train_log.csv"),
                    out_stats=str(d / "train_stats.json"),
                    method=method,
                    **BASE_ARGS,
                ),
            )
        )
        out[method] = (d, stats)
    return out


@pytest.mark.parametrize("method", ["lora", "dora", "rslora", "qlora", "lora_8bit", "full"])
def test_every_method_learns(trained, method):
    d, stats = trained[method]
    log = pd.read_csv(d / "train_log.csv")
    evals = log["eval_loss"].dropna()
    assert evals.min() < evals.iloc[0] - 0.05, f"{method} did not learn: {list(evals)}"
    assert stats["method"] == method and stats["steps"] == 12


@pytest.mark.parametrize("method, flag", [("dora", "use_dora"), ("rslora", "use_rslora")])
def test_dora_and_rslora_are_peft_flags(trained, method, flag):
    cfg = json.loads((trained[method][0] / "adapter" / "adapter_config.json").read_text())
    assert cfg[flag] is True
    other = {"use_dora", "use_rslora"} - {flag}
    assert all(cfg[o] is False for o in other)
    assert json.loads((trained["lora"][0] / "adapter" / "adapter_config.json").read_text())[flag] is False


def test_dora_trains_magnitude_vectors_and_counts_them(trained, model64):
    from safetensors.torch import load_file

    weights = load_file(trained["dora"][0] / "adapter" / "adapter_model.safetensors")
    assert any("lora_magnitude_vector" in k for k in weights)
    stats = trained["dora"][1]
    assert stats["trainable_params"] == trained["lora"][1]["trainable_params"] + 2 * (
        64 + 32
    )  # + |W| per output row of q, v
    assert (stats["trainable_params"], stats["total_params"]) == lora_counts(
        meta_model(str(model64)), 4, 8, "qv", "dora"
    )


def test_qlora_quantises_the_base_and_records_the_optimiser(trained, model64):
    d, stats = trained["qlora"]
    assert stats["quantization"].startswith("nf4") and stats["gradient_checkpointing"] is True
    assert stats["optimizer"] in ("PagedAdamW8bit", "AdamW")  # AdamW only where bitsandbytes' optimiser cannot run
    assert stats["optimizer"] == "PagedAdamW8bit"  # it runs on this CPU build of bitsandbytes
    model = load_for_eval(str(model64), str(d / "adapter"), method="qlora")
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, bnb.nn.Linear4bit) and q_proj.weight.quant_type == "nf4"
    assert model.get_base_model().config.quantization_config.bnb_4bit_use_double_quant is True
    assert trained["lora_8bit"][1]["quantization"] == "int8"


def test_full_fine_tuning_saves_a_whole_model_and_trains_every_weight(trained, model64):
    d, stats = trained["full"]
    assert (d / "adapter" / "config.json").is_file() and not (d / "adapter" / "adapter_config.json").exists()
    assert stats["trainable_params"] == stats["total_params"] and stats["trainable_pct"] == 100
    assert stats["learning_rate"] == BASE_ARGS["learning_rate_full"]
    tuned, base = load_for_eval(str(model64), str(d / "adapter")), load_for_eval(str(model64), None)
    changed = [n for (n, a), (_, b) in zip(tuned.named_parameters(), base.named_parameters()) if not torch.equal(a, b)]
    assert len(changed) == len(list(base.named_parameters()))  # every tensor moved
    assert stats["adapter_mb"] > 10 * trained["lora"][1]["adapter_mb"]


def test_preflight_counts_match_training_for_every_method(trained, model64, tmp_path):
    for method, (_, stats) in trained.items():
        info = preflight_run(
            str(model64),
            str(tmp_path / f"{method}.json"),
            method,
            4,
            8.0,
            "qv",
            method=method,
            settings=PreflightSettings(batch_size=4, max_length=64),
        )
        assert info["trainable_params"] == stats["trainable_params"], method
    est = {m: json.loads((tmp_path / f"{m}.json").read_text())["est_peak_train_memory_mb"] for m in trained}
    assert est["qlora"] < est["lora_8bit"] < est["lora"] < est["full"]


def test_methods_evaluate_merge_and_share_one_table(trained, tiny_data, model64, tmp_path):
    paths, npz = tiny_data
    runs, stats, metrics, checks = {}, [], [], []
    for method, (d, _) in trained.items():
        name = "full" if method == "full" else f"r4_a8_qv_{method}"
        runs[name] = {
            "point": name,
            "method": method,
            "r": None if method == "full" else 4,
            "lora_alpha": None if method == "full" else 8.0,
            "targets": "all" if method == "full" else "qv",
            "seed": 3,
        }
        m = evaluate_model(
            EvalPaths(
                str(model64),
                str(paths["dir"] / "test.jsonl"),
                npz[2],
                str(paths["meta"]),
                str(d / "eval.json"),
                str(d / "gen.jsonl"),
            ),
            EvalSettings(max_new_tokens=8, consistency_questions=0),
            adapter_dir=str(d / "adapter"),
            threads=1,
            method=method,
        )
        assert m["method"] == method and m["eval_loss"] > 0
        stats.append(str(d / "train_stats.json"))
        metrics.append(str(d / "eval.json"))
        if method != "full":  # adapters trained on a quantised base merge into the full-precision base
            check = merge_adapter(
                str(model64),
                str(d / "adapter"),
                str(paths["dir"] / "test.jsonl"),
                str(tmp_path / name / "merged"),
                str(tmp_path / name / "merge_check.json"),
                MergeSettings(threads=1, speed_tokens=2, method=method),
            )
            assert check["passed"], (method, check["max_abs_logit_diff"])
            checks.append(str(tmp_path / name / "merge_check.json"))
    base = evaluate_model(
        EvalPaths(
            str(model64),
            str(paths["dir"] / "test.jsonl"),
            npz[2],
            str(paths["meta"]),
            str(tmp_path / "base.json"),
            str(tmp_path / "base_gen.jsonl"),
        ),
        EvalSettings(max_new_tokens=8, consistency_questions=0),
        threads=1,
    )
    assert base["method"] is None
    df = write_comparison(
        TableInputs(str(tmp_path / "base.json"), stats, metrics, checks),
        TableOutputs(str(tmp_path / "c.csv"), str(tmp_path / "c.md")),
        runs,
        TableSettings("eval_loss"),
    )
    assert list(df["method"].iloc[1:]) == list(trained)
    full = df[df["run"] == "full"].iloc[0]
    assert full["merge_check"] == "n/a" and full["trainable_pct"] == 100 and pd.isna(full["r"])
    assert set(df.loc[df["run"] != "base", "optimizer"]) == {"AdamW", "PagedAdamW8bit"}
    md = (tmp_path / "c.md").read_text()
    assert "| method |" in md and "PagedAdamW8bit" in md and "| full |" in md


def test_bf16_mixed_precision_trains_close_to_fp32(tiny_data, model64, tmp_path):
    from loraflow.model.device import training_precision

    paths, npz = tiny_data
    losses = {}
    for precision in ("fp32", "bf16"):
        d = tmp_path / precision
        stats = train_lora(
            **bind(
                train_lora,
                dict(
                    model_dir=str(model64),
                    train_path=npz[0],
                    val_path=npz[1],
                    tokens_meta=str(paths["meta"]),
                    out_adapter=str(d / "adapter"),
                    out_log=str(d / "log.csv"),
                    out_stats=str(d / "stats.json"),
                    precision=precision,
                    **BASE_ARGS,
                ),
            )
        )
        assert stats["precision"] == precision
        losses[precision] = stats["best_eval_loss"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.05)
    assert training_precision("fp32", torch.device("cpu")) == "fp32"
    assert training_precision("auto", torch.device("cpu")) in ("fp32", "bf16")


def test_one_lora_config_builder_for_train_preflight_and_classifier(tiny_model, monkeypatch):
    """Training, preflight and the classification task all build their LoraConfig with
    methods.lora_config, where the method flags live."""
    from transformers import BertConfig, BertForSequenceClassification

    import loraflow.model.methods as methods
    from loraflow.tasks.seq_cls.train import lora_classifier

    model = meta_model(str(tiny_model))
    for method, flags in (
        ("lora", {}),
        ("dora", {"use_dora": True}),
        ("rslora", {"use_rslora": True}),
        ("qlora", {}),
        ("lora_8bit", {}),
    ):
        cfg = methods.lora_config(method, 4, 8, "qv", 0.1, model=model)
        assert (
            cfg.target_modules == {"q_proj", "v_proj"}
            and cfg.r == 4
            and cfg.lora_alpha == 8
            and cfg.lora_dropout == 0.1
        )
        assert (cfg.use_dora, cfg.use_rslora) == (flags.get("use_dora", False), flags.get("use_rslora", False))
        assert cfg.bias == "none" and cfg.task_type == "CAUSAL_LM"
    with pytest.raises(ValueError, match="grid.method 'full' trains no adapter"):
        methods.lora_config("full", 4, 8, "qv")

    built = []
    real = methods.lora_config
    monkeypatch.setattr(
        methods, "lora_config", lambda *a, **k: built.append((a[0], k.get("task_type", "CAUSAL_LM"))) or real(*a, **k)
    )
    lora_counts(meta_model(str(tiny_model)), 4, 8, "qv", "dora")
    methods.trainable_model(load_for_eval(str(tiny_model), None), "rslora", 4, 8, "qv", 0.0)
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            num_labels=2,
        )
    )
    lora_classifier(bert, 2, 4, "qv", method="dora")
    assert built == [("dora", "CAUSAL_LM"), ("rslora", "CAUSAL_LM"), ("dora", "SEQ_CLS")]
