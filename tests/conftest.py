"""Shared fixtures: a tiny randomly initialised Llama and a tokenizer trained here with `tokenizers`,
so tests exercise the real transformers/peft code paths in seconds and never touch a hub. The helpers
they use live in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import QA, build_tiny_model, snakemake, synth_corpus, tiny_config, write_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", synth_corpus())


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_nt") / "model", synth_corpus(), chat_template=None)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_model):
    """Formatted and tokenised QA pairs (the same rows in train/val/test): (paths, npz files)."""
    from transformers import AutoTokenizer

    from loraflow.data.chatml import format_example
    from loraflow.data.settings import SplitFiles, TokenFiles
    from loraflow.data.tokenization import tokenize_splits
    from loraflow.io import write_jsonl

    d = tmp_path_factory.mktemp("tiny_data")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [
        {
            "id": str(i),
            **format_example(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "Be brief."),
        }
        for i, (q, a) in enumerate(QA)
    ]
    for split in ("train", "val", "test"):
        write_jsonl(d / f"{split}.jsonl", rows)
    npz = [str(d / f"{s}.npz") for s in ("train", "val", "test")]
    splits = SplitFiles(*(str(d / f"{s}.jsonl") for s in ("train", "val", "test")))
    tokenize_splits(str(tiny_model), splits, TokenFiles(*npz, str(d / "meta.json")), 128)
    return {"dir": d, "model": tiny_model, "meta": d / "meta.json"}, npz


@pytest.fixture(scope="session")
def qwen05_model(tmp_path_factory) -> Path:
    """A randomly initialised model of the Qwen2.5-0.5B shape (494M parameters, GQA, tied embeddings,
    vocabulary 151936) in bf16 with a tokenizer trained here: see loraflow.model.shapes."""
    from loraflow.model.shapes import build_random_model

    return build_random_model(tmp_path_factory.mktemp("qwen05") / "model", "qwen2.5-0.5b", corpus=synth_corpus())


@pytest.fixture(scope="session")
def halving_local(tmp_path_factory, tiny_model) -> Path:
    """The 4-point halving sweep (helpers.halving_config) run to its table with `--cores 1 --resources
    gpu=1`: its workdir. Shared by the halving and Slurm tests, which only read it."""
    from helpers import halving_config

    workdir = tmp_path_factory.mktemp("halving1")
    write_config(workdir, halving_config(tiny_model))
    snakemake(workdir, "results/comparison.md", "--cores", "1", "--resources", "gpu=1")
    return workdir


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_model):
    """The tiny sweep (.test/config) run once to the end with `--cores 1 --resources gpu=1`:
    (workdir, CompletedProcess). Shared by the workflow and Slurm tests; tests must leave it as found."""
    workdir = tmp_path_factory.mktemp("wf")
    write_config(workdir, tiny_config(tiny_model))
    proc = snakemake(workdir, "--cores", "1", "--resources", "gpu=1")
    return workdir, proc
