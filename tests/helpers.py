"""Helpers shared by the test modules (fixtures live in conftest.py, which imports from here).

Test modules import from this module, never from one another, so that each test module can be read,
moved or removed on its own."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

REPO = Path(__file__).resolve().parents[1]

# The real data sets (CSV/JSONL files of several shapes; tests/test_data_real.py) are not part of the
# repository: $LORAFLOW_DATA_DIR names their directory, else `shared/data` beside the checkout is used.
DATA_DIR_ENV = "LORAFLOW_DATA_DIR"


def real_data_dir() -> Path | None:
    """The directory of the real data sets, or None where there is none."""
    for candidate in (os.environ.get(DATA_DIR_ENV), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


# --------------------------------------------------------------------------------------------------
# A tiny model: a BPE tokenizer trained here and a 2-layer Llama, in seconds and offline
# --------------------------------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(
    out_dir: Path, corpus: list[str], chat_template: str | None = CHATML, seed: int = 0, hidden_size: int = 32
) -> Path:
    """Train a small byte-level BPE tokenizer on `corpus` and save a 2-layer Llama with it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    if chat_template:
        tok.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def synth_corpus(n_rows: int = 300) -> list[str]:
    import tempfile

    from loraflow.data.builtin.support_qa import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.jsonl"
        generate_dataset(str(path), n_rows=n_rows, seed=1)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [f"{r['question']} {r['answer']}" for r in rows]


QA = [
    ("What does the X1 cost?", "The X1 costs $129."),
    ("How long is the warranty?", "Two years."),
    ("Which colours?", "Red and blue."),
    ("Launch year?", "It launched in 2021."),
    ("谁生产的？", "洛摩家居生产。"),
    ("Return window?", "30 days."),
    ("Is shipping free?", "Free above $50."),
    ("服务时间？", "每天九点到六点。"),
]


# --------------------------------------------------------------------------------------------------
# The workflow on the tiny model (.test/config) through Snakemake
# --------------------------------------------------------------------------------------------------

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def tiny_config(model_dir: Path) -> dict:
    """.test/config/config.yaml (the workflow tests' sweep) on the tiny random model."""
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text(encoding="utf-8"))
    config["base_model"] = {"source": "local", "path": str(model_dir)}
    return config


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir: Path) -> dict[str, int]:
    """{rule: count} that a dry run would execute."""
    out = snakemake(workdir, "-n", "--quiet", "rules").stdout
    jobs = {}
    for line in out.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def planned_resources(workdir: Path, *args: str) -> dict[str, dict]:
    """{rule: {threads, gpu}} of the first planned job of each rule (dry run)."""
    out = snakemake(workdir, "-n", *args).stdout
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m or m.group(1) in jobs:
            continue
        threads = re.search(r"^\s+threads: (\d+)", block, re.M)
        gpu = re.search(r"gpu=(\d+)", block)
        jobs[m.group(1)] = {
            "threads": int(threads.group(1)) if threads else 1,
            **({"gpu": int(gpu.group(1))} if gpu else {}),
        }
    return jobs


TIMING = ["train_time_s", "peak_memory_mb", "tok_s_base", "tok_s_adapter", "tok_s_merged"]  # measured, not computed


def assert_same_results(a: Path, b: Path) -> None:
    """Two finished runs of one sweep agree: split files, the same trained adapters (byte for byte), table
    (timing aside)."""
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejected.jsonl"):
        assert (a / "results/data" / name).read_bytes() == (b / "results/data" / name).read_bytes()
    adapters = sorted(p.relative_to(a) for p in a.glob("results/runs/*/adapter/adapter_model.safetensors"))
    assert adapters and adapters == sorted(
        p.relative_to(b) for p in b.glob("results/runs/*/adapter/adapter_model.safetensors")
    )
    for adapter in adapters:
        assert (a / adapter).read_bytes() == (b / adapter).read_bytes(), adapter
    t1 = pd.read_csv(a / "results/comparison.csv").drop(columns=TIMING)
    t2 = pd.read_csv(b / "results/comparison.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(t1, t2)


# --------------------------------------------------------------------------------------------------
# The train stage in a process of its own
# --------------------------------------------------------------------------------------------------

TRAIN_ARGS = dict(
    r=4,
    lora_alpha=8,
    target_modules=["q_proj", "v_proj"],
    max_steps=150,
    batch_size=2,
    eval_every=10,
    learning_rate=0.01,
    lora_dropout=0.1,
    threads=1,
    seed=5,
    checkpoint_every=5,
)


def run_args(data, out, ckpt):
    d, npz = data
    return dict(
        model_dir=str(d["model"]),
        train_path=npz[0],
        val_path=npz[1],
        tokens_meta=str(d["meta"]),
        out_adapter=str(out / "adapter"),
        out_log=str(out / "log.csv"),
        out_stats=str(out / "stats.json"),
        checkpoint_dir=str(ckpt),
        **TRAIN_ARGS,
    )


def kill_after_first_checkpoint(module: str, function: str, args: dict, checkpoint_dir) -> int:
    """Run the train stage `module.function(**args)` in a new process and kill -9 it as soon as it has
    written a checkpoint in `checkpoint_dir`; returns the checkpoint's step."""
    code = (
        f"import json; from loraflow.binding import bind; from {module} import {function}; "
        f"{function}(**bind({function}, json.loads({json.dumps(json.dumps(args))})))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = checkpoint_dir / "state.json"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no checkpoint was written before the kill"
    return json.loads(state.read_text())["step"]


# --------------------------------------------------------------------------------------------------
# Reader property tests: adversarial records and the writers of the files people have
# --------------------------------------------------------------------------------------------------

COLUMNS = {
    "messages": "messages",
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "question": "question",
    "answer": "answer",
    "system": "system",
}


SEED = 32  # fixed: the same examples on every run; found failures are replayed from the database


PROPS = settings(
    database=DirectoryBasedExampleDatabase(str(REPO / "tests" / "hypothesis-db")),
    deadline=None,
    print_blob=True,
    max_examples=200,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


# Pieces that broke or could break readers: quotes, delimiters, line breaks, BOMs, entities, operators,
# every script, emoji ZWJ sequences, combining marks, bidi and zero-width characters, JSON-looking text.
PIECES = [
    '"',
    "'",
    '""',
    ",",
    ";",
    "|",
    "\t",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\ufeff",
    "\\",
    "\\n",
    "\\t",
    "\\u00e9",
    "&amp;",
    "&copy=2",
    "&#x27;",
    "<p>",
    "</b>",
    "&&",
    "::",
    "<>",
    "...",
    "->",
    "==",
    "{",
    "}",
    "[",
    "]",
    '{"a": 1}',
    "[{",
    "null",
    "1e-4",
    "👨\u200d👩\u200d👧",
    "🏳️\u200d🌈",
    "é",
    "e\u0301",
    "中文，？",
    "العربية",
    "עברית\u200f",
    "हिन्दी",
    "ไทย",
    "한국어",
    "Ǆ",
    "\u200b",
    "\u2028",
    "\x85",
    "\x00",
    "\x1b[31m",
    "\u00a0",
    "Ω",
    "²",
    "𝔘",
    "—",
    "“”",
    "«»",
    "Ã©",
    "â€™",
]


TEXT = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(st.characters(exclude_categories=("Cs",)), max_size=6)), max_size=6
).map("".join)


RECORDS = st.lists(st.fixed_dictionaries({"question": TEXT, "answer": TEXT}), min_size=1, max_size=5)


def write_jsonl(records, ensure_ascii: bool, newline: str) -> str:
    return "".join(json.dumps(r, ensure_ascii=ensure_ascii) + newline for r in records)


def write_json(records, shape: str, indent) -> str:
    if shape == "array":
        return json.dumps(records, ensure_ascii=False, indent=indent)
    if shape == "wrapper":
        return json.dumps({"version": 1, "rows": records}, ensure_ascii=False, indent=indent)
    return (
        "\n".join(json.dumps(r, ensure_ascii=False, indent=indent or 2) for r in records) + "\n"
    )  # values one after another


def write_delimited(records, sep: str, quoting: int, newline: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, quoting=quoting, lineterminator=newline)
    writer.writerow(["question", "answer"])
    for r in records:
        writer.writerow([r["question"], r["answer"]])
    return buf.getvalue()


def write_plain_tsv(records, newline: str) -> str:
    return "question\tanswer" + newline + "".join(f"{r['question']}\t{r['answer']}{newline}" for r in records)


# --------------------------------------------------------------------------------------------------
# Stage outputs made by hand, for the table and report
# --------------------------------------------------------------------------------------------------


def stage_files(
    tmp_path,
    runs: dict[str, dict],
    rouge: dict[str, float],
    val: dict[str, float] | None = None,
    precision: str | None = None,
):
    """Write train_stats / eval / merge_check files like the stages do; returns the three lists."""
    base = {
        "eval_loss": 2.0,
        "perplexity": 7.39,
        "bleu": 5.0,
        "rouge1": 20.0,
        "rouge2": 5.0,
        "rougeL": 18.0,
        "exact_match": 0.0,
        "consistency": 40.0,
    }
    (tmp_path / "base").mkdir(parents=True, exist_ok=True)
    (tmp_path / "base" / "eval.json").write_text(json.dumps(base))
    files = ([], [], [])
    for name, hp in runs.items():
        d = tmp_path / "runs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "preflight.json").write_text("{}")
        (d / "train_stats.json").write_text(
            json.dumps(
                {
                    "trainable_params": 1000 * hp["r"],
                    "trainable_pct": 0.1,
                    "adapter_mb": 0.5,
                    "train_time_s": 10.0,
                    "peak_memory_mb": 900.0,
                    "final_train_loss": 1.0,
                    "best_eval_loss": 1.1,
                }
            )
        )
        m = {**base, "eval_loss": 1.0, "rougeL": rouge[name], "consistency": 80.0}
        if val:
            m["val"] = {**base, "eval_loss": 1.1, "rougeL": val[name]}
        if precision:
            m["precision"] = precision
        (d / "eval.json").write_text(json.dumps(m))
        (d / "merge_check.json").write_text(
            json.dumps(
                {
                    "max_abs_logit_diff": 1e-5,
                    "passed": True,
                    "tok_s_base": 50.0,
                    "tok_s_adapter": 40.0,
                    "tok_s_merged": 50.0,
                }
            )
        )
        (d / "train_log.csv").write_text(
            "step,epoch,train_loss,eval_loss,lr,tokens_seen,elapsed_s\n1,1,2.0,,0.1,10,1\n2,1,1.5,1.4,0.1,20,2\n"
        )
        (d / "samples.jsonl").write_text(
            json.dumps(
                {
                    "prompt": "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n",
                    "reference": "A",
                    "base_answer": "<b>x</b>",
                    "tuned_answer": "A",
                }
            )
            + "\n"
        )
        for lst, f in zip(files, ("train_stats.json", "eval.json", "merge_check.json")):
            lst.append(str(d / f))
    return files


def hp(r, alpha, seed, point=None, lr=None):
    return {
        "r": r,
        "lora_alpha": alpha,
        "targets": "qv",
        "seed": seed,
        "point": point or f"r{r}_a{alpha:g}_qv",
        "learning_rate": lr,
    }


# --------------------------------------------------------------------------------------------------
# Successive halving on the tiny model
# --------------------------------------------------------------------------------------------------


def halving_config(model_dir) -> dict:
    config = tiny_config(model_dir)
    config["grid"]["lora_alpha"] = [8, 16]  # 4 points: cut to 2 at step 2, to 1 at step 4, trained to step 8
    config["train"].update(max_steps=8, compile=False)
    # calibrate always: the bill under halving is priced in the workflow (auto leaves a sweep this short unpriced)
    config["search"] = {"method": "halving", "eta": 2, "min_steps": 2, "calibrate": "always"}
    return config


def cut_history(workdir) -> dict:
    history = json.loads((workdir / "results" / "search" / "select1.json").read_text())
    for rung in history["rungs"]:
        for result in rung["points"].values():
            del result["train_time_s"]  # a timing: the only figure allowed to differ
    return history


# The base model's eval.json figures of the table tests that construct their runs' scores.
BASE_METRICS = {
    "eval_loss": 2.0,
    "perplexity": 7.39,
    "bleu": 5.0,
    "rouge1": 20.0,
    "rouge2": 5.0,
    "rougeL": 18.0,
    "exact_match": 0.0,
    "consistency": 40.0,
}


def write_train_stats(path) -> None:
    """A minimal train_stats.json, as the train stage writes it, for table tests that score runs only."""
    stats = {"trainable_params": 1, "trainable_pct": 0.1, "adapter_mb": 0.1, "train_time_s": 1.0, "peak_memory_mb": 1.0}
    Path(path).write_text(json.dumps({**stats, "final_train_loss": 1.0, "best_eval_loss": 1.0}))
