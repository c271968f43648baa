"""Train, evaluate, merge and table stages called directly (no Snakemake) on the tiny model."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from loraflow.binding import bind
from loraflow.evaluate.generation import generate
from loraflow.evaluate.loading import load_for_eval
from loraflow.evaluate.run import evaluate_model
from loraflow.evaluate.settings import EvalPaths, EvalSettings
from loraflow.model.batching import collate, length_grouped_batches
from loraflow.model.loading import load_causal_lm
from loraflow.model.loss import supervised_loss
from loraflow.report.settings import TableInputs, TableOutputs, TableSettings
from loraflow.report.table import write_comparison
from loraflow.ship.merge import merge_adapter
from loraflow.ship.settings import MergeSettings
from loraflow.tasks.causal_lm.train import train_lora


@pytest.fixture(scope="module")
def prepared(tiny_data):
    paths, npz = tiny_data
    return paths["dir"], npz


def train(d, npz, tiny_model, name, **kw):
    args = dict(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        max_steps=12,
        batch_size=4,
        eval_every=4,
        learning_rate=0.02,
        lora_dropout=0.0,
        threads=1,
        seed=3,
    )
    args.update(kw)
    out = d / name
    stats = train_lora(
        **bind(
            train_lora,
            dict(
                model_dir=str(tiny_model),
                train_path=npz[0],
                val_path=npz[1],
                tokens_meta=str(d / "meta.json"),
                out_adapter=str(out / "adapter"),
                out_log=str(out / "train_log.csv"),
                out_stats=str(out / "train_stats.json"),
                **args,
            ),
        )
    )
    return out, stats


def test_training_learns_and_writes_a_peft_adapter(prepared, tiny_model):
    from peft import PeftModel

    d, npz = prepared
    out, stats = train(d, npz, tiny_model, "run")
    log = pd.read_csv(out / "train_log.csv")
    assert list(log.columns) == ["step", "epoch", "train_loss", "eval_loss", "lr", "tokens_seen", "elapsed_s"]
    assert log["eval_loss"].dropna().iloc[-1] < log["eval_loss"].dropna().iloc[0]  # it learns
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    assert cfg["bias"] == "none" and cfg["task_type"] == "CAUSAL_LM"
    model = PeftModel.from_pretrained(load_causal_lm(str(tiny_model), torch.device("cpu")), out / "adapter")
    trainable = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert (
        trainable == stats["trainable_params"] == 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4)
    )  # 2 layers x (q: A 4x32, B 32x4; v: A 4x32, B 16x4)
    assert stats["supervised_tokens_seen"] > 0 and stats["tokens_per_s"] > 0 and stats["peak_memory_mb"] > 0


def test_same_seed_same_adapter(prepared, tiny_model):
    from safetensors.torch import load_file

    d, npz = prepared
    a, _ = train(d, npz, tiny_model, "seed_a", max_steps=3)
    b, _ = train(d, npz, tiny_model, "seed_b", max_steps=3)
    wa, wb = (
        load_file(a / "adapter" / "adapter_model.safetensors"),
        load_file(b / "adapter" / "adapter_model.safetensors"),
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_early_stopping_keeps_the_best_adapter(prepared, tiny_model):
    d, npz = prepared
    _, stats = train(
        d, npz, tiny_model, "early", learning_rate=2.0, max_steps=40, eval_every=1, early_stopping_patience=2
    )
    assert stats["steps"] < 40
    assert stats["best_step"] <= stats["steps"] - 2


def test_supervised_loss_matches_transformers_loss(tiny_model):
    model = load_causal_lm(str(tiny_model), torch.device("cpu"))
    import numpy as np

    ex = [
        (np.arange(3, 15, dtype=np.int32), np.array([0] * 6 + [1] * 6, dtype=np.uint8)),
        (np.arange(5, 13, dtype=np.int32), np.array([0] * 4 + [1] * 4, dtype=np.uint8)),
    ]
    batch = collate(ex, pad_id=0, device=torch.device("cpu"))
    total, n = supervised_loss(model, batch)
    labels = batch["input_ids"].masked_fill(~batch["labels_mask"], -100)
    ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    assert n == 10 - 0  # 6 + 4 supervised targets (the first token is never a target here)
    assert torch.allclose(total / n, ref, atol=1e-5)


def test_length_grouped_batches_cover_every_example_once():
    import numpy as np

    lengths = list(np.random.default_rng(0).integers(5, 300, size=103))
    batches = length_grouped_batches(lengths, 8, np.random.default_rng(1), group=4)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))

    def spread(bs):
        return np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in bs])

    random_batches = [list(range(i, min(i + 8, 103))) for i in range(0, 103, 8)]
    assert spread(batches) < 0.5 * spread(random_batches)  # sorted within windows: much less padding


def test_evaluate_base_and_adapter_and_merge(prepared, tiny_model):
    d, npz = prepared
    out, _ = train(d, npz, tiny_model, "evalrun", max_steps=30, learning_rate=0.03)
    base = evaluate_model(
        EvalPaths(
            str(tiny_model),
            str(d / "test.jsonl"),
            npz[2],
            str(d / "meta.json"),
            str(d / "base.json"),
            str(d / "base_gen.jsonl"),
        ),
        EvalSettings(max_new_tokens=12, batch_size=3),
        threads=1,
    )
    tuned = evaluate_model(
        EvalPaths(
            str(tiny_model),
            str(d / "test.jsonl"),
            npz[2],
            str(d / "meta.json"),
            str(d / "tuned.json"),
            str(d / "tuned_gen.jsonl"),
        ),
        EvalSettings(max_new_tokens=12, batch_size=3),
        adapter_dir=str(out / "adapter"),
        threads=1,
    )
    assert tuned["eval_loss"] < base["eval_loss"]
    assert tuned["perplexity"] == pytest.approx(2.718281828 ** tuned["eval_loss"], rel=1e-6)
    assert {"bleu", "rouge1", "rouge2", "rougeL", "exact_match"} <= set(tuned)
    check = merge_adapter(
        str(tiny_model),
        str(out / "adapter"),
        str(d / "test.jsonl"),
        str(out / "merged"),
        str(out / "merge_check.json"),
        MergeSettings(tolerance=1e-4, threads=1),
    )
    assert check["passed"] and check["max_abs_logit_diff"] <= 1e-4
    assert not any("lora" in k for k in json.dumps(json.loads((out / "merged" / "config.json").read_text())))
    run_stats = json.loads((out / "train_stats.json").read_text())
    runs = {"r4_a8_qv": {"r": 4, "lora_alpha": 8.0, "targets": "qv"}}
    df = write_comparison(
        TableInputs(
            str(d / "base.json"),
            [str(out / "train_stats.json")],
            [str(d / "tuned.json")],
            [str(out / "merge_check.json")],
        ),
        TableOutputs(str(d / "cmp.csv"), str(d / "cmp.md")),
        runs,
        TableSettings(best_metric="eval_loss"),
    )
    assert list(df["run"]) == ["base", "r4_a8_qv"] and df.loc[1, "best"] == "best (eval_loss)"
    assert df.loc[1, "alpha_over_r"] == 2 and df.loc[1, "trainable_params"] == run_stats["trainable_params"]


def test_batched_generation_equals_one_by_one(prepared, tiny_model):
    from transformers import AutoTokenizer

    d, _ = prepared
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = load_for_eval(str(tiny_model), None)
    prompts = [json.loads(line)["prompt"] for line in (d / "test.jsonl").read_text().splitlines()]
    batched, _ = generate(model, tok, prompts, batch_size=8, max_new_tokens=10)
    single, _ = generate(model, tok, prompts, batch_size=1, max_new_tokens=10)
    assert batched == single


def test_merge_check_fails_loudly_when_above_tolerance(prepared, tiny_model):
    d, npz = prepared
    out, _ = train(d, npz, tiny_model, "tol", max_steps=5, learning_rate=0.05)
    with pytest.raises(RuntimeError, match="merged model differs"):
        merge_adapter(
            str(tiny_model),
            str(out / "adapter"),
            str(d / "test.jsonl"),
            str(out / "merged"),
            str(out / "merge_check.json"),
            MergeSettings(tolerance=1e-30, threads=1),
        )
    assert not (out / "merged").exists() and not (out / "merge_check.json").exists()


def test_prepacked_linears_compute_what_the_plain_ones_do(tiny_model, tmp_path):
    import shutil

    from peft import LoraConfig, get_peft_model

    from loraflow.model.kernels import prepack_cpu_linears

    torch.manual_seed(0)
    model_dir = shutil.copytree(tiny_model, tmp_path / "model")  # a file path no other test maps

    def mapped() -> bool:  # Linux: is the checkpoint file memory-mapped in this process?
        maps = Path("/proc/self/maps")
        return maps.is_file() and str(model_dir / "model.safetensors") in maps.read_text()

    model = get_peft_model(
        load_causal_lm(str(model_dir), torch.device("cpu"), dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    ).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter: B is zero at initialisation
            torch.nn.init.normal_(p, std=0.05)
    ids = torch.randint(3, model.config.vocab_size, (3, 17))
    was_mapped = mapped()  # transformers loads safetensors weights as views of the mapped file
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        frozen = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and "lora_" not in n]
        assert prepack_cpu_linears(model, batch_hint=3) == len(frozen) > 0
        assert not any(type(m) is torch.nn.Linear for n, m in model.named_modules() if "lora_" not in n)
        assert (
            sum(type(m) is torch.nn.Linear for m in model.modules()) == 2 * 2 * model.config.num_hidden_layers
        )  # lora_A, lora_B kept
        packed = model(input_ids=ids).logits
    assert packed.shape == plain.shape
    if was_mapped:  # the checkpoint's memory map is released with the weights
        assert not mapped()
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)


def varied_model_and_batch(prepared, tiny_model):
    """(left-padding tokenizer, 8 test prompts encoded, the tiny model with weights large enough that its
    greedy tokens vary: as initialised it repeats one token)."""
    from transformers import AutoTokenizer

    d, _ = prepared
    tok = AutoTokenizer.from_pretrained(tiny_model, padding_side="left")
    prompts = [json.loads(line)["prompt"] for line in (d / "test.jsonl").read_text().splitlines()]
    enc = tok(prompts[:8], return_tensors="pt", padding=True, add_special_tokens=False)
    model = load_for_eval(str(tiny_model), None)
    torch.manual_seed(0)
    for p in model.parameters():
        if p.dim() == 2:
            p.data.normal_(0.0, 0.2)
    return tok, enc, model


def test_cpu_decoding_gives_the_tokens_of_plain_decoding(prepared, tiny_model):
    import copy

    from loraflow.evaluate.generation import cpu_decoding, greedy_decode

    tok, enc, plain_model = varied_model_and_batch(prepared, tiny_model)
    fast_model = copy.deepcopy(plain_model)
    assert cpu_decoding(plain_model, "plain", 8) is False
    assert not any(type(m).__name__ == "_PrepackedLinear" for m in plain_model.modules())
    static = cpu_decoding(fast_model, "auto", 8)
    assert static is True and any(type(m).__name__ == "_PrepackedLinear" for m in fast_model.modules())
    with torch.no_grad():  # no stop tokens: all 16 steps decoded
        plain = greedy_decode(plain_model, enc["input_ids"], enc["attention_mask"], 16, [], tok.pad_token_id)
        fast = greedy_decode(
            fast_model, enc["input_ids"], enc["attention_mask"], 16, [], tok.pad_token_id, static_cache=static
        )
    assert plain.shape == (8, 16) and len(set(plain.flatten().tolist())) > 8
    assert torch.equal(fast, plain)


def test_stopped_rows_leave_the_batch_with_the_same_tokens(prepared, tiny_model):
    """greedy_decode(drop_finished=True) decodes without the rows that have stopped (batch and KV cache
    shrink); every row's tokens equal those of decoding the full batch to the end, for both caches."""
    from loraflow.evaluate.generation import greedy_decode

    tok, enc, model = varied_model_and_batch(prepared, tiny_model)
    with torch.no_grad():
        free = greedy_decode(model, enc["input_ids"], enc["attention_mask"], 16, [], tok.pad_token_id).tolist()

    def end(row, t):  # the step a row emits t (16: never)
        return next((k for k, x in enumerate(row) if x == t), 16)

    stop = max({t for row in free for t in row}, key=lambda t: len({end(row, t) for row in free}))
    ends = [end(row, stop) for row in free]
    assert len(set(ends)) >= 3  # the stop token ends rows at different steps
    for static in (False, True):
        with torch.no_grad():
            kept, dropped = (
                greedy_decode(
                    model,
                    enc["input_ids"],
                    enc["attention_mask"],
                    16,
                    [stop],
                    tok.pad_token_id,
                    static,
                    drop_finished=drop,
                ).tolist()
                for drop in (False, True)
            )
        assert dropped == kept
        for row, full, e in zip(dropped, free, ends):  # each row: its free-running tokens up to the stop, then padding
            assert row[: e + 1] == full[: e + 1] and all(t == tok.pad_token_id for t in row[e + 1 :])
