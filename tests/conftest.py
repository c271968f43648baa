"""Shared fixtures: a tiny randomly initialised Llama and a tokenizer trained here with `tokenizers`,
so tests exercise the real transformers/peft code paths in seconds and never touch a hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(out_dir: Path, corpus: list[str], chat_template: str | None = CHATML, seed: int = 0, hidden_size: int = 32) -> Path:
    """Train a small byte-level BPE tokenizer on `corpus` and save a 2-layer Llama with it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat_template:
        tok.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def synth_corpus(n_rows: int = 300) -> list[str]:
    from loraflow.data.builtin.support_qa import generate_dataset
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.jsonl"
        generate_dataset(str(path), n_rows=n_rows, seed=1)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [f"{r['question']} {r['answer']}" for r in rows]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", synth_corpus())


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_nt") / "model", synth_corpus(), chat_template=None)


QA = [("What does the X1 cost?", "The X1 costs $129."), ("How long is the warranty?", "Two years."),
      ("Which colours?", "Red and blue."), ("Launch year?", "It launched in 2021."), ("谁生产的？", "洛摩家居生产。"),
      ("Return window?", "30 days."), ("Is shipping free?", "Free above $50."), ("服务时间？", "每天九点到六点。")]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_model):
    """Formatted and tokenised QA pairs (the same rows in train/val/test): (paths, npz files)."""
    from transformers import AutoTokenizer

    from loraflow.data.chatml import format_example
    from loraflow.io import write_jsonl
    from loraflow.data.tokenization import tokenize_splits

    d = tmp_path_factory.mktemp("tiny_data")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"id": str(i), **format_example(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "Be brief.")}
            for i, (q, a) in enumerate(QA)]
    for split in ("train", "val", "test"):
        write_jsonl(d / f"{split}.jsonl", rows)
    npz = [str(d / f"{s}.npz") for s in ("train", "val", "test")]
    tokenize_splits(str(tiny_model), *(str(d / f"{s}.jsonl") for s in ("train", "val", "test")), *npz, str(d / "meta.json"), 128)
    return {"dir": d, "model": tiny_model, "meta": d / "meta.json"}, npz


@pytest.fixture(scope="session")
def qwen05_model(tmp_path_factory) -> Path:
    """A randomly initialised model of the Qwen2.5-0.5B shape (494M parameters, GQA, tied embeddings,
    vocabulary 151936) in bf16 with a tokenizer trained here: see loraflow.model.shapes."""
    from loraflow.model.shapes import build_random_model

    return build_random_model(tmp_path_factory.mktemp("qwen05") / "model", "qwen2.5-0.5b", corpus=synth_corpus())


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_model):
    """The tiny sweep (.test/config) run once to the end with `--cores 1 --resources gpu=1`:
    (workdir, CompletedProcess). Shared by the workflow and Slurm tests; tests must leave it as found."""
    from test_workflow import snakemake, tiny_config, write_config

    workdir = tmp_path_factory.mktemp("wf")
    write_config(workdir, tiny_config(tiny_model))
    proc = snakemake(workdir, "--cores", "1", "--resources", "gpu=1")
    return workdir, proc
