"""The fast training path is the same computation: packed rows, split forward passes and the chunked
loss give the unpacked per-example losses and gradients; epochs are exact; timing is training only."""

import math

import numpy as np
import pytest
import torch

from loraflow.binding import bind
from loraflow.model import device, kernels, loading
from loraflow.model import loss as chunked_loss
from loraflow.model.batching import collate, forward_batches, pack, pack_rows
from loraflow.model.loading import load_causal_lm
from loraflow.model.loss import per_example_loss, supervised_loss
from loraflow.model.methods import trainable_model
from loraflow.train.schedule import epoch_micro_batches, plan_epoch_steps, step_stream

CPU = torch.device("cpu")
ATOL_LOSS, RTOL_LOSS = 1e-5, 1e-6  # summed NLL (per example or per batch), fp32: only summation order differs
ATOL_GRAD = 1e-6  # LoRA gradients, fp32


def nontrivial_lora(model_dir):
    torch.manual_seed(0)
    model = trainable_model(load_causal_lm(str(model_dir), CPU), "lora", 4, 8, ["q_proj", "v_proj"], 0.0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a non-trivial adapter (peft initialises B to zero)
            torch.nn.init.normal_(p, std=0.2)
    return model


@pytest.fixture(scope="module")
def lora_model(tiny_model):
    return nontrivial_lora(tiny_model)


def examples(lengths, seed=0, vocab=500):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        mask = (rng.random(n) > 0.4).astype(np.uint8)
        mask[0] = 1  # a first-token "target" must never count (nothing before it in its conversation)
        out.append((rng.integers(3, vocab, size=n).astype(np.int32), mask))
    return out


def lora_grads(model, batches):
    """Gradient of the mean NLL over all target tokens of `batches` (as a training step scales it)."""
    model.zero_grad(set_to_none=True)
    n_target = sum(int(b["labels_mask"][:, 1:].sum()) for b in batches)
    for batch in batches:
        total, _ = supervised_loss(model, batch)
        (total / n_target).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.fixture(params=["sdpa", "eager"])
def attention(request, lora_model):
    """lora_model with transformers' SDPA or eager attention (train.attention), set back to SDPA after."""
    loading.unwrap(lora_model).set_attn_implementation(request.param)
    yield request.param
    loading.unwrap(lora_model).set_attn_implementation("sdpa")


def test_packed_batch_gives_the_unpacked_per_example_loss(lora_model, attention):
    assert loading.unwrap(lora_model).config._attn_implementation == attention
    ex = examples([37, 12, 60, 25, 9, 44, 3, 18])
    padded, packed = collate(ex, 0, CPU), pack(ex, 0, CPU, max_length=64)
    assert packed["input_ids"].shape[0] < len(ex)  # several conversations share a row
    assert int(packed["labels_mask"].sum()) == sum(int(m[1:].sum()) for _, m in ex)
    a, na = per_example_loss(lora_model, padded, len(ex))
    b, nb = per_example_loss(lora_model, packed, len(ex))
    assert torch.equal(na, nb) and torch.allclose(a, b, atol=ATOL_LOSS, rtol=RTOL_LOSS)
    g = lora_grads(lora_model, [padded])
    for batches in (
        forward_batches(ex, 0, CPU, packing=True, max_length=64),
        forward_batches(ex, 0, CPU, True, 64, 64),
        forward_batches(ex, 0, CPU, False, 64, 100),
    ):
        assert torch.allclose(lora_grads(lora_model, batches), g, atol=ATOL_GRAD, rtol=0)


def test_eager_attention_equals_sdpa_on_packed_rows(lora_model):
    """Eager attention (train.attention: auto on bf16 CPUs) keeps packed conversations apart as SDPA does:
    the same per-example losses and LoRA gradients."""
    ex = examples([37, 12, 60, 25, 9, 44, 3, 18], seed=4)
    batches = forward_batches(ex, 0, CPU, True, 64, 64)
    out = {}
    for impl in ("sdpa", "eager"):
        loading.unwrap(lora_model).set_attn_implementation(impl)
        out[impl] = per_example_loss(lora_model, pack(ex, 0, CPU, 64), len(ex))[0], lora_grads(lora_model, batches)
    loading.unwrap(lora_model).set_attn_implementation("sdpa")
    assert torch.allclose(out["sdpa"][0], out["eager"][0], atol=ATOL_LOSS, rtol=RTOL_LOSS)
    assert torch.allclose(out["sdpa"][1], out["eager"][1], atol=ATOL_GRAD, rtol=0)


def test_auto_attention_and_compile_choices(monkeypatch):
    """train.attention / train.compile: explicit values are kept; auto picks eager attention and compiled
    layers only for bf16 on a CPU with bf16 units (eager only with rows of at most 512 tokens; compiled
    only for lora / rslora, without gradient checkpointing, with a C++ compiler)."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(kernels, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(kernels, "cxx_compiler_found", lambda: True)
    att = kernels.attention_implementation
    assert att("auto", CPU, "bf16", 512) == "eager" and att("auto", CPU, "bf16", 513) == "sdpa"
    assert att("auto", CPU, "fp32", 512) == att("auto", cuda, "bf16", 512) == "sdpa"
    assert att("sdpa", CPU, "bf16", 128) == "sdpa" and att("eager", cuda, "fp32", 4096) == "eager"
    comp = kernels.compile_training
    assert comp("auto", CPU, "bf16", "lora", False) and comp("auto", CPU, "bf16", "rslora", False)
    assert not any(
        [
            comp("auto", CPU, "fp32", "lora", False),
            comp("auto", cuda, "bf16", "lora", False),
            comp("auto", CPU, "bf16", "qlora", False),
            comp("auto", CPU, "bf16", "full", False),
            comp("auto", CPU, "bf16", "lora", True),
        ]
    )
    assert comp(True, cuda, "fp32", "full", True) and not comp(False, CPU, "bf16", "lora", False)
    monkeypatch.setattr(kernels, "cxx_compiler_found", lambda: False)
    assert not comp("auto", CPU, "bf16", "lora", False)
    monkeypatch.setattr(
        kernels, "cpu_has_fast_bf16", lambda: False
    )  # bf16 emulated (AVX2): measured nowhere, so neither
    monkeypatch.setattr(kernels, "cxx_compiler_found", lambda: True)
    assert att("auto", CPU, "bf16", 512) == "sdpa" and not comp("auto", CPU, "bf16", "lora", False)


@pytest.mark.skipif(not kernels.cxx_compiler_found(), reason="torch.compile on a CPU needs a C++ compiler (g++)")
def test_compiled_layers_give_the_same_loss_and_gradient(tiny_model):
    """train.compile: the decoder layers compiled (dynamic shapes: passes of other widths and row counts
    reuse the graph) compute the eager model's per-example losses and LoRA gradients, with eager attention
    and packed rows as the auto choice runs them."""
    from loraflow.tasks.causal_lm.model import compile_layers

    model = nontrivial_lora(tiny_model)  # its own copy: compiling changes the layers in place
    loading.unwrap(model).set_attn_implementation("eager")
    sets = [
        examples([37, 12, 60, 25, 9, 44, 3, 18], seed=5),
        examples([20, 31, 7], seed=6),
        examples([50, 50, 14, 9, 22], seed=7),
    ]
    expected = [
        (
            per_example_loss(model, pack(ex, 0, CPU, 64), len(ex))[0],
            lora_grads(model, forward_batches(ex, 0, CPU, True, 64, 64)),
        )
        for ex in sets
    ]
    compile_layers(model)
    layers = loading.unwrap(model).model.layers
    assert all(getattr(layer, "_compiled_call_impl", None) is not None for layer in layers)
    for ex, (loss, grad) in zip(sets, expected):
        assert torch.allclose(per_example_loss(model, pack(ex, 0, CPU, 64), len(ex))[0], loss, atol=1e-4, rtol=1e-5)
        assert torch.allclose(lora_grads(model, forward_batches(ex, 0, CPU, True, 64, 64)), grad, atol=1e-5, rtol=1e-4)


def test_widths_rounded_to_the_shape_granule_same_loss_and_gradient(lora_model):
    """bf16 on a CPU rounds every forward pass's width to a multiple of the granule (kernels.shape_granule:
    oneDNN keeps a kernel per matmul shape); the extra columns are padding without targets, so the
    per-example loss and the gradient are those of the unrounded passes."""
    assert kernels.shape_granule(CPU, "bf16") == kernels.ONEDNN_GRANULE > 1 and kernels.shape_granule(CPU, "fp32") == 1
    ex = examples([37, 12, 60, 25, 9, 44, 3, 18])
    g = lora_grads(lora_model, forward_batches(ex, 0, CPU, True, 64, 64))
    a, _ = per_example_loss(lora_model, pack(ex, 0, CPU, 64), len(ex))
    b, _ = per_example_loss(lora_model, pack(ex, 0, CPU, 64, granule=24), len(ex))
    assert pack(ex, 0, CPU, 64, granule=24)["input_ids"].shape[1] == 72 and torch.allclose(
        a, b, atol=ATOL_LOSS, rtol=RTOL_LOSS
    )
    for granule, batches in (
        (24, forward_batches(ex, 0, CPU, True, 64, 64, granule=24)),
        (16, forward_batches(ex, 0, CPU, False, 64, 100, granule=16)),
    ):
        assert all(b["input_ids"].shape[1] % granule == 0 for b in batches)
        assert sum(int(b["labels_mask"][:, 1:].sum()) for b in batches) == sum(int(m[1:].sum()) for _, m in ex)
        assert torch.allclose(lora_grads(lora_model, batches), g, atol=ATOL_GRAD, rtol=0)


def test_validation_through_the_training_passes_gives_the_padded_mean_loss(lora_model):
    """The train stage validates with its own forward passes (packed, rounded to the granule: no matmul
    shapes beyond the training step's); the mean loss is that of right-padded batches."""
    from loraflow.model.loss import mean_loss

    ex = examples([37, 12, 60, 25, 9, 44, 3, 18], seed=2)
    padded = mean_loss(lora_model, ex, 4, 0, CPU)
    passes = []

    def training_passes(batch):
        passes.append(forward_batches(batch, 0, CPU, True, 64, 64, granule=16))
        return passes[-1]

    packed = mean_loss(lora_model, ex, 4, 0, CPU, forwards=training_passes)
    assert len(passes) == 2 and all(
        p["input_ids"].shape[1] % 16 == 0 and "position_ids" in p for ps in passes for p in ps
    )
    assert math.isclose(packed, padded, rel_tol=1e-6)


def test_packed_rows_no_wider_than_the_longest_conversation():
    """A micro-batch of short chats is packed into rows as wide as its longest chat, not tokenize.max_length
    (attention over a row costs width² whatever the mask holds); short chats still share a row."""
    ex = examples([30, 20, 10, 25, 5])
    for batches in (forward_batches(ex, 0, CPU, True, 512), forward_batches(ex, 0, CPU, True, 512, 512)):
        assert max(b["input_ids"].shape[1] for b in batches) == 30
        assert sum(b["input_ids"].shape[0] for b in batches) == 3  # [30], [25, 5], [20, 10]
        assert sum(int(b["labels_mask"].sum()) for b in batches) == sum(int(m[1:].sum()) for _, m in ex)


def test_no_attention_across_conversations_of_a_row(lora_model):
    ex = examples([20, 30, 10])
    rows = [[0, 1, 2]]
    before, _ = per_example_loss(lora_model, pack(ex, 0, CPU, 64, rows=rows), 3)
    changed = [ex[0], ex[1], (np.full(10, 7, dtype=np.int32), ex[2][1])]
    after, _ = per_example_loss(
        lora_model, pack(changed, 0, CPU, 64, rows=[[2, 0, 1]]), 3
    )  # other order, other neighbours
    assert torch.allclose(before[:2], after[:2], atol=ATOL_LOSS, rtol=RTOL_LOSS) and not torch.allclose(
        before[2], after[2]
    )


def test_pack_rows_first_fit_within_max_length():
    lengths = list(np.random.default_rng(3).integers(1, 200, size=57)) + [300]
    rows = pack_rows(lengths, 256)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 256 for r in rows if len(r) > 1)
    assert len(rows) <= math.ceil(sum(lengths) / 256) + 2  # close to the bound


def test_chunked_loss_equals_full_logits(lora_model, monkeypatch):
    ex = examples([40, 33, 21])
    batch = collate(ex, 0, CPU)
    lm = loading.unwrap(lora_model)
    hidden = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels_mask"][:, 1:]
    labels = batch["input_ids"][:, 1:][target]
    ref = torch.nn.functional.cross_entropy(lm.lm_head(hidden[:, :-1][target]).float(), labels, reduction="sum")
    lora_model.zero_grad(set_to_none=True)
    (ref / len(labels)).backward()
    g_ref = torch.cat([p.grad.flatten() for p in lora_model.parameters() if p.requires_grad]).clone()
    monkeypatch.setattr(chunked_loss, "LOSS_CHUNK_BYTES", 16 * 4 * lm.lm_head.weight.shape[0])  # chunks of 16 positions
    for granule in (
        1,
        7,
    ):  # 7: every chunk's positions padded with zero rows to a multiple of 7 (bf16 on a CPU pads to ONEDNN_GRANULE)
        monkeypatch.setattr(chunked_loss, "_head_granule", lambda hidden: granule)
        total, n = supervised_loss(lora_model, batch)
        assert n == len(labels) > 32 and torch.allclose(total, ref, atol=ATOL_LOSS, rtol=RTOL_LOSS)
        assert torch.allclose(lora_grads(lora_model, [batch]), g_ref, atol=ATOL_GRAD, rtol=0)
        with torch.no_grad():
            assert torch.allclose(supervised_loss(lora_model, batch)[0], ref, atol=ATOL_LOSS, rtol=RTOL_LOSS)


def test_evaluate_per_row_loss_through_a_prepacked_head_equals_full_logits(tiny_model, monkeypatch):
    """The evaluate stage's per-row loss (evaluate.run.per_row_nll: batches sorted by length, the head in
    padded chunks through the module) equals each row's own full-logits NLL, also once the linears are
    prepacked for inference (the head is then no nn.Linear) and in bf16 (widths rounded to the granule)."""
    from loraflow.evaluate.run import per_row_nll

    model = load_causal_lm(str(tiny_model), CPU)
    ex = examples([40, 33, 21, 8, 15], seed=4)
    ref = []
    with torch.no_grad():
        for ids, mask in ex:
            logits = model(input_ids=torch.from_numpy(ids.astype(np.int64))[None]).logits[0, :-1].float()
            target = torch.from_numpy(mask[1:].astype(bool))
            ref.append(
                torch.nn.functional.cross_entropy(
                    logits[target], torch.from_numpy(ids[1:].astype(np.int64))[target], reduction="sum"
                )
            )
    ref, counts = torch.stack(ref).double().numpy(), np.array([int(m[1:].sum()) for _, m in ex])
    monkeypatch.setattr(
        chunked_loss, "LOSS_CHUNK_BYTES", 16 * 4 * model.lm_head.weight.shape[0]
    )  # chunks of 16 positions
    monkeypatch.setattr(chunked_loss, "_head_granule", lambda hidden: 7)
    nll, n = per_row_nll(model, ex, 2, 0, CPU)
    assert np.array_equal(n, counts) and np.allclose(nll, ref, rtol=1e-5, atol=1e-4)
    assert kernels.prepack_cpu_linears(model, 2) > 0 and not isinstance(loading.unwrap(model).lm_head, torch.nn.Linear)
    nll, n = per_row_nll(model, ex, 2, 0, CPU)
    assert np.array_equal(n, counts) and np.allclose(nll, ref, rtol=1e-4, atol=1e-3)
    monkeypatch.undo()
    bf16 = load_causal_lm(str(tiny_model), CPU, dtype=torch.bfloat16)
    nll, n = per_row_nll(bf16, ex, 2, 0, CPU)
    assert np.array_equal(n, counts) and np.allclose(nll, ref, rtol=3e-2)


def test_bf16_training_chunked_loss_matches_full_logits(tiny_model):
    """bf16 training (methods.load_base in device.train_weight_dtype): frozen base in bf16, LoRA in
    fp32; under autocast the chunked loss equals the full-logits cross-entropy (bf16 matmuls: rtol 1e-2)."""
    from loraflow.model.methods import load_base

    batch = collate(examples([30, 17]), 0, CPU)
    torch.manual_seed(1)
    model = trainable_model(
        load_base(str(tiny_model), CPU, "lora", dtype=device.train_weight_dtype("bf16")),
        "lora",
        4,
        8,
        ["q_proj", "v_proj"],
        0.0,
    )
    lm = loading.unwrap(model)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert lm.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, n = supervised_loss(model, batch)
        hidden = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        target = batch["labels_mask"][:, 1:]
        ref = torch.nn.functional.cross_entropy(
            lm.lm_head(hidden[:, :-1][target]).float(), batch["input_ids"][:, 1:][target], reduction="sum"
        )
    assert got.dtype == torch.float32 and n == int(target.sum()) and torch.allclose(got, ref, rtol=1e-2, atol=0)


@pytest.mark.parametrize("bf16_units", [True, False])
def test_bf16_chunked_loss_gradient_matches_full_logits_with_or_without_bf16_units(monkeypatch, bf16_units):
    """Under bf16 autocast the chunked loss's hidden-state gradient equals the full-logits cross-entropy's,
    whether its head product is a bf16 matmul (CPUs with bf16 units) or runs in fp32 over vocabulary slices
    (CPUs that emulate bf16, where torch's bf16 kernel for that product is very slow)."""
    monkeypatch.setattr(chunked_loss, "cpu_has_fast_bf16", lambda: bf16_units)
    monkeypatch.setattr(chunked_loss, "VOCAB_SLICE", 96)  # several slices of the 500-word vocabulary
    torch.manual_seed(3)
    head = torch.nn.Linear(64, 500, bias=False).to(torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(40, 64, requires_grad=True)
    labels = torch.randint(0, 500, (40,))
    ref_hidden = hidden.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = chunked_loss.head_nll(head, hidden, labels)
        ref = torch.nn.functional.cross_entropy(head(ref_hidden).float(), labels, reduction="none")
    (nll.sum()).backward()
    ref.sum().backward()
    assert torch.allclose(nll, ref, rtol=1e-2, atol=0)
    assert hidden.grad is not None and ref_hidden.grad is not None
    assert torch.allclose(hidden.grad, ref_hidden.grad, rtol=2e-2, atol=2e-3)


def test_exact_epochs_every_row_n_times_last_step_smaller():
    lengths = list(np.random.default_rng(0).integers(5, 90, size=180))
    n_batches = math.ceil(180 / 4)  # 45 micro-batches of 4
    assert plan_epoch_steps(n_batches, 4, 1, 0) == 12 and plan_epoch_steps(n_batches, 4, 2, 0) == 24
    steps = list(step_stream(lengths, 4, 4, seed=1, epochs=2, max_steps=0))
    assert len(steps) == 24 and [len(b) for _, b in steps[:12]] == [4] * 11 + [1]
    seen = np.bincount([i for _, batches in steps for b in batches for i in b], minlength=180)
    assert (seen == 2).all() and {e for e, _ in steps} == {0, 1}
    half = list(step_stream(lengths, 4, 4, seed=1, epochs=1.5, max_steps=0))
    assert len(half) == plan_epoch_steps(n_batches, 4, 1.5, 0) == 12 + 6 and epoch_micro_batches(45, 1.5, 1) == 23
    assert list(step_stream(lengths, 4, 4, seed=1, epochs=2, max_steps=0, start=13)) == steps[13:]  # resumable


def test_train_time_is_training_only_and_one_epoch_is_exact(tiny_data, tmp_path, monkeypatch):
    import time

    from helpers import run_args
    from loraflow.tasks.causal_lm import train as causal_lm
    from loraflow.tasks.causal_lm.train import train_lora

    real = causal_lm.mean_loss

    def slow_eval(*a, **k):  # every validation pass takes >= 0.5 s: none of it may land in train_time_s
        time.sleep(0.5)
        return real(*a, **k)

    monkeypatch.setattr(causal_lm, "mean_loss", slow_eval)

    args = dict(
        run_args(tiny_data, tmp_path / "run", tmp_path / "ckpt"),
        max_steps=0,
        epochs=1,
        batch_size=3,
        grad_accum=2,
        eval_every=1,
        checkpoint_every=0,
    )
    stats = train_lora(**bind(train_lora, args))
    ex = modeling_split(tiny_data)
    assert stats["steps"] == math.ceil(math.ceil(len(ex) / 3) / 2)
    assert stats["tokens_seen"] == sum(len(i) for i, _ in ex) and stats["epochs_seen"] == 1
    assert stats["packing"] is True and stats["eval_time_s"] >= 0.5 * stats["steps"]  # eval_every=1: one pass per step
    assert (
        0 < stats["train_time_s"] < 0.5 * stats["steps"]
    )  # train_time_s excludes every validation pass, the final one too


def modeling_split(tiny_data):
    from loraflow.data.tokenization import load_split

    d, npz = tiny_data
    return load_split(npz[0], str(d["meta"]), str(d["model"]))


def test_max_memory_switches_on_gradient_checkpointing(tiny_data, tmp_path):
    from helpers import run_args
    from loraflow.tasks.causal_lm.train import train_lora

    stats = train_lora(
        **bind(
            train_lora,
            dict(
                run_args(tiny_data, tmp_path / "gc", tmp_path / "c"), max_steps=2, checkpoint_every=0, max_memory_mb=1
            ),
        )
    )
    assert stats["gradient_checkpointing"] is True and stats["est_memory_mb"] > 1


def test_trailing_partial_character_trimmed_at_the_token_cap(tiny_model):
    from loraflow.evaluate.generation import trim_partial_character

    tok = loading.load_tokenizer(str(tiny_model))
    text = "answer: 乙肝病毒"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    cut = ids[:-1]  # the last character's final byte is missing: a byte-level BPE decode ends in U+FFFD
    assert tok.decode(cut).endswith("\ufffd")
    got = trim_partial_character(tok, cut)
    assert got == "answer: 乙肝病" and "\ufffd" not in got
    assert trim_partial_character(tok, ids) == text  # a complete answer keeps every character


def test_memory_estimate_terms(tiny_model):
    from loraflow.model.memory import ALLOCATOR_SLACK, TRAIN_TERMS, TrainJob, estimate_memory_mb, weights_file_info
    from loraflow.train.grid_check import lora_counts, meta_model

    model = meta_model(str(tiny_model))
    trainable, total = lora_counts(model, 4, 8, ["q_proj", "v_proj"])
    kw = dict(device_type="cpu", tokens_per_forward=512)
    terms: dict = {}
    fp32 = estimate_memory_mb(model, trainable, total, TrainJob(4, 512, precision="fp32", **kw), terms=terms)
    assert math.isclose(sum(terms[k] for k in TRAIN_TERMS), fp32) and terms["peak_phase"] == "train"
    assert set(TRAIN_TERMS) == {
        "process",
        "weights",
        "optimizer",
        "activations",
        "attention",
        "loss",
        "tokens",
        "kernels",
    }
    assert terms["kernels"] == 0 and terms["attention"] == 0  # fp32: SDPA, nothing kept per score
    assert math.isclose(terms["weights"], total * 4 / 2**20)
    bf16_terms: dict = {}
    estimate_memory_mb(model, trainable, total, TrainJob(4, 512, precision="bf16", **kw), terms=bf16_terms)
    assert bf16_terms["weights"] < terms["weights"] and bf16_terms["activations"] < terms["activations"]
    assert bf16_terms["kernels"] > 0  # oneDNN's kernel cache: bf16 on a CPU only
    # eager attention keeps layers x heads x tokens x width scores (6 bytes each uncompiled, 2 compiled)
    cfg = model.config
    eager = {c: {} for c in (False, True)}
    for c in eager:
        job = TrainJob(4, 128, precision="bf16", attention="eager", compile=c, **kw)
        estimate_memory_mb(model, trainable, total, job, terms=eager[c])
    scores = cfg.num_hidden_layers * cfg.num_attention_heads * 512 * 128 / 2**20 * ALLOCATOR_SLACK
    assert math.isclose(eager[False]["attention"], 6 * scores) and math.isclose(eager[True]["attention"], 2 * scores)
    narrow: dict = {}  # rows no wider than the longest train row
    estimate_memory_mb(
        model,
        trainable,
        total,
        TrainJob(4, 128, precision="bf16", attention="eager", compile=True, longest=64, **kw),
        terms=narrow,
    )
    assert math.isclose(narrow["attention"], eager[True]["attention"] / 2)
    assert (bf16_terms["attention"] > 0) == kernels.cpu_has_fast_bf16()  # auto: eager where bf16 is native, rows <= 512
    gc_terms: dict = {}
    estimate_memory_mb(
        model, trainable, total, TrainJob(4, 512, precision="fp32", gradient_checkpointing=True, **kw), terms=gc_terms
    )
    assert gc_terms["activations"] < terms["activations"]
    # activations grow linearly with the tokens of one forward pass
    big: dict = {}
    estimate_memory_mb(
        model,
        trainable,
        total,
        TrainJob(4, 512, precision="fp32", device_type="cpu", tokens_per_forward=1024),
        terms=big,
    )
    assert math.isclose(big["activations"], 2 * terms["activations"])
    # on a CPU the load can be the peak: pages of weight files that are converted (fp32 -> bf16) stay
    # resident next to the converted weights; files loaded in their own dtype are not copied
    info = weights_file_info(tiny_model)
    assert info == (sum(f.stat().st_size for f in tiny_model.glob("*.safetensors")), 4) and weights_file_info(
        "org/hub-id"
    ) == (0, 0)
    big_fp32 = (100 * 2**30, 4)  # as if the fp32 files were 100 GiB: converted to bf16, the load decides the estimate
    load: dict = {}
    est = estimate_memory_mb(
        model, trainable, total, TrainJob(4, 512, precision="bf16", weights_file=big_fp32, **kw), terms=load
    )
    assert load["peak_phase"] == "load" and math.isclose(est, load["load_peak"])
    assert math.isclose(load["load_peak"], load["process"] + big_fp32[0] / 2**20 + load["weights"])
    for precision, file in (("fp32", big_fp32), ("bf16", (100 * 2**30, 2))):  # loaded in the dtype stored: no copy
        same: dict = {}
        estimate_memory_mb(
            model, trainable, total, TrainJob(4, 512, precision=precision, weights_file=file, **kw), terms=same
        )
        assert same["peak_phase"] == "train" and same["load_peak"] < 2 * same["weights"] + same["process"]
    gpu: dict = {}  # on a GPU the files stay in host memory: no load term on the device
    est_gpu = estimate_memory_mb(
        model,
        trainable,
        total,
        TrainJob(4, 512, precision="bf16", weights_file=big_fp32, device_type="cuda", tokens_per_forward=512),
        terms=gpu,
    )
    assert (
        gpu["peak_phase"] == "train" and math.isclose(est_gpu, sum(gpu[k] for k in TRAIN_TERMS)) and gpu["kernels"] == 0
    )
