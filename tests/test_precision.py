"""The model stages in the precision users deploy in: train, evaluate and merge in bf16 on the CPU
(emulated where the CPU has no bf16 units: slower, same numbers), the merge checks in fp32 and in the
deploy precision, and that those checks still catch a wrong merge."""

import json

import pytest
import torch

import loraflow.ship.merge as merge_module
from loraflow.binding import bind
from loraflow.evaluate.loading import load_for_eval
from loraflow.evaluate.run import evaluate_model
from loraflow.evaluate.settings import EvalPaths, EvalSettings
from loraflow.model.device import model_precision, pick_dtype, precision_name, train_weight_dtype, training_precision
from loraflow.model.kernels import attention_implementation, compile_training
from loraflow.report.settings import TableInputs, TableOutputs, TableSettings
from loraflow.report.table import write_comparison
from loraflow.ship.merge import merge_adapter
from loraflow.ship.settings import MergeSettings
from loraflow.tasks.causal_lm.train import train_lora

ARGS = dict(r=4, lora_alpha=8, target_modules="qv", batch_size=4, eval_every=0, lora_dropout=0.0, threads=1, seed=3)


@pytest.fixture(scope="module")
def bf16_run(tiny_data, tmp_path_factory):
    """One adapter trained in bf16 mixed precision (frozen base in bf16), big enough to matter."""
    paths, npz = tiny_data
    d = tmp_path_factory.mktemp("bf16")
    stats = train_lora(
        **bind(
            train_lora,
            dict(
                model_dir=str(paths["model"]),
                train_path=npz[0],
                val_path=npz[1],
                tokens_meta=str(paths["meta"]),
                out_adapter=str(d / "adapter"),
                out_log=str(d / "train_log.csv"),
                out_stats=str(d / "train_stats.json"),
                precision="bf16",
                max_steps=8,
                learning_rate=0.05,
                **ARGS,
            ),
        )
    )
    return d, stats


def merge(paths, d, name, precision, **kw):
    out = d / name
    return merge_adapter(
        str(paths["model"]),
        str(d / "adapter"),
        str(paths["dir"] / "test.jsonl"),
        str(out / "merged"),
        str(out / "merge_check.json"),
        MergeSettings(threads=1, speed_tokens=2, precision=precision, **kw),
    ), out


def test_precision_names_and_dtypes():
    cpu = torch.device("cpu")
    assert pick_dtype(cpu, "bf16") == torch.bfloat16 and pick_dtype(cpu, "fp32") == torch.float32
    assert pick_dtype(cpu) == torch.float32  # no configured precision: fp32 on a CPU
    assert pick_dtype(cpu, "auto") == (torch.bfloat16 if training_precision("auto", cpu) == "bf16" else torch.float32)
    assert precision_name(torch.bfloat16) == "bf16" and precision_name(torch.float16) == "float16"
    assert train_weight_dtype("bf16", "lora") == torch.bfloat16  # frozen base in bf16, as deployed
    assert train_weight_dtype("bf16", "full") == torch.float32  # trained weights stay fp32 (master weights)
    assert train_weight_dtype("fp32", "qlora") == torch.float32


def test_bf16_training_keeps_the_base_in_bf16_and_trains_fp32_weights(tiny_model):
    from loraflow.model.methods import load_base, trainable_model

    for method in ("lora", "dora", "full"):
        model = trainable_model(
            load_base(str(tiny_model), torch.device("cpu"), method, dtype=train_weight_dtype("bf16", method)),
            method,
            4,
            8,
            "qv",
            0.0,
        )
        trained = {p.dtype for p in model.parameters() if p.requires_grad}
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        assert trained == {torch.float32}, method  # AdamW updates fp32 weights
        assert frozen == ({torch.bfloat16} if method != "full" else set()), method


def test_bf16_stages_train_evaluate_merge_and_table(bf16_run, tiny_data):
    paths, npz = tiny_data
    d, stats = bf16_run
    assert stats["precision"] == "bf16" and stats["steps"] == 8
    # train.attention / train.compile auto, as the train stage resolved them for this CPU (eager and compiled
    # where bf16 is native and a C++ compiler is found, else SDPA and uncompiled)
    cpu = torch.device("cpu")
    assert stats["attention"] == attention_implementation(
        "auto", cpu, "bf16", json.loads(paths["meta"].read_text())["max_length"]
    )
    assert stats["compiled"] == compile_training("auto", cpu, "bf16", "lora", False)
    model = load_for_eval(str(paths["model"]), str(d / "adapter"), precision="bf16")
    assert model_precision(model) == "bf16"
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {
        torch.float32
    }  # peft keeps the adapter in fp32
    metrics = {}
    for precision in ("bf16", "fp32"):
        metrics[precision] = evaluate_model(
            EvalPaths(
                str(paths["model"]),
                str(paths["dir"] / "test.jsonl"),
                npz[2],
                str(paths["meta"]),
                str(d / f"eval_{precision}.json"),
                str(d / f"gen_{precision}.jsonl"),
            ),
            EvalSettings(max_new_tokens=6, consistency_questions=0, precision=precision),
            adapter_dir=str(d / "adapter"),
            threads=1,
        )
        assert json.loads((d / f"eval_{precision}.json").read_text())["precision"] == precision
    assert metrics["bf16"]["eval_loss"] == pytest.approx(metrics["fp32"]["eval_loss"], abs=0.05)  # same model, rounded

    check, out = merge(paths, d, "r4_a8_qv", "bf16")  # the table joins merge checks by run directory
    assert check["passed"] and check["precision"] == "bf16" and check["check_precision"] == "fp32"
    assert check["max_abs_logit_diff"] <= 1e-4  # the merge itself, compared in fp32
    assert 0 < check["deploy_precision_error"]  # bf16 really rounds ...
    assert check["deploy_max_abs_logit_diff"] <= check["deploy_tolerance"]  # ... and the saved bf16 model is within it
    assert json.loads((out / "merge_check.json").read_text()) == check
    cfg = json.loads((out / "merged" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"  # saved in the deploy dtype
    from safetensors import safe_open

    with safe_open(str(out / "merged" / "model.safetensors"), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"BF16"}
    runs = {"r4_a8_qv": {"r": 4, "lora_alpha": 8.0, "targets": "qv"}}
    base = evaluate_model(
        EvalPaths(
            str(paths["model"]),
            str(paths["dir"] / "test.jsonl"),
            npz[2],
            str(paths["meta"]),
            str(d / "base.json"),
            str(d / "base_gen.jsonl"),
        ),
        EvalSettings(max_new_tokens=6, consistency_questions=0, precision="bf16"),
        threads=1,
    )
    assert base["precision"] == "bf16"
    df = write_comparison(
        TableInputs(
            str(d / "base.json"),
            [str(d / "train_stats.json")],
            [str(d / "eval_bf16.json")],
            [str(out / "merge_check.json")],
        ),
        TableOutputs(str(d / "cmp.csv"), str(d / "cmp.md")),
        runs,
        TableSettings(best_metric="eval_loss"),
    )
    assert df.loc[1, "merge_check"] == "pass" and df.loc[1, "merge_max_abs_diff"] == check["max_abs_logit_diff"]


def test_bf16_merge_compared_in_bf16_would_fail_the_tolerance(bf16_run, tiny_data):
    """Why the merge check upcasts: merged and unmerged bf16 models differ by bf16 rounding far above
    merge.tolerance even when the merge is right; in fp32 the same merge is within 1e-4."""
    from peft import PeftModel

    paths, _ = tiny_data
    d, _ = bf16_run
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["model"])
    rows = [json.loads(line) for line in (paths["dir"] / "test.jsonl").read_text().splitlines()][:4]
    batch = tok([r["text"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
    diffs = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = PeftModel.from_pretrained(
            load_for_eval(str(paths["model"]), None, precision=precision_name(dtype)), d / "adapter"
        ).eval()
        with torch.no_grad():
            before = model(**batch).logits.float()
            after = model.merge_and_unload()(**batch).logits.float()
        diffs[dtype] = (before - after).abs().max().item()
    assert diffs[torch.float32] < 1e-4 < 1e-3 < diffs[torch.bfloat16]


def wrong_scale(monkeypatch):
    from peft.tuners.lora.layer import Linear

    original = Linear.get_delta_weight
    monkeypatch.setattr(Linear, "get_delta_weight", lambda self, adapter: 2 * original(self, adapter))


def missing_module(monkeypatch):
    from peft.tuners.lora.layer import Linear

    original, calls = Linear.merge, []

    def merge_all_but_first(self, *args, **kwargs):
        calls.append(self)
        if len(calls) > 1:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(Linear, "merge", merge_all_but_first)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("fault", [wrong_scale, missing_module], ids=["wrong_scale", "missing_module"])
def test_merge_check_catches_a_wrong_merge(bf16_run, tiny_data, monkeypatch, precision, fault):
    paths, _ = tiny_data
    d, _ = bf16_run
    fault(monkeypatch)
    with pytest.raises(RuntimeError, match="merged model differs from base \\+ adapter: .* in fp32"):
        merge(paths, d, f"bad_{precision}", precision)
    assert (
        not (d / f"bad_{precision}" / "merged").exists() and not (d / f"bad_{precision}" / "merge_check.json").exists()
    )


def test_deploy_check_catches_a_saved_model_that_is_off(bf16_run, tiny_data, monkeypatch):
    """A right merge that goes wrong on its way to the bf16 file (here: one projection scaled by 1.1
    when cast) passes the fp32 check and must fail the check of the saved model."""
    paths, _ = tiny_data
    d, _ = bf16_run
    cast = merge_module.cast_weights

    def cast_and_spoil(model, dtype, device=None):
        model = cast(model, dtype, device)
        if dtype == torch.bfloat16:
            with torch.no_grad():
                model.model.layers[0].self_attn.v_proj.weight.mul_(1.1)
        return model

    monkeypatch.setattr(merge_module, "cast_weights", cast_and_spoil)
    with pytest.raises(RuntimeError, match="the saved merged model \\(bf16\\) differs"):
        merge(paths, d, "spoilt", "bf16")
    assert not (d / "spoilt" / "merged").exists() and not (d / "spoilt" / "merge_check.json").exists()
