"""task seq_cls: data preparation, LoRA + head training, evaluation through PeftModel.from_pretrained,
baselines, table, and the whole workflow, on a tiny random BERT with a WordPiece tokenizer trained here."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import REPO
from loraflow.binding import bind
from loraflow.config import ConfigError, validate_config
from loraflow.data.builtin.reviews import make_reviews
from loraflow.data.readers import DataError, iter_raw_rows
from loraflow.data.settings import CleanOutputs, SplitOutputs
from loraflow.evaluate.metrics import has_cjk
from loraflow.io import read_json, read_jsonl, write_jsonl
from loraflow.tasks.seq_cls.data import (
    check_config,
    check_method,
    clean_classification_data,
    clean_rows,
    split_classification_data,
    stratified_split,
)

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
POSITIVE = ["good", "great", "excellent", "love", "perfect", "happy"]
NEGATIVE = ["bad", "awful", "terrible", "hate", "broken", "sad"]
FILLER = [
    "the",
    "product",
    "it",
    "was",
    "really",
    "delivery",
    "box",
    "price",
    "shop",
    "day",
    "my",
    "this",
    "and",
    "with",
]


def build_tiny_bert(out_dir: Path, corpus: list[str], seed: int = 0) -> Path:
    """A WordPiece tokenizer whose vocabulary is `corpus`'s words and characters, and a 2-layer BERT
    encoder (hidden 32), no head. The vocabulary is built, not trained: the WordPiece trainer breaks
    ties in hash order, so it gave another vocabulary (and other training results) in every process."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = {w for text in corpus for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))}
    chars = sorted({c for w in words for c in w})
    vocab = specials + chars + [f"##{c}" for c in chars] + sorted(words - set(chars))
    wp = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    wp.normalizer, wp.pre_tokenizer, wp.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", wp.token_to_id("[CLS]")), ("[SEP]", wp.token_to_id("[SEP]"))],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=wp,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
    )
    BertModel(config).save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def easy_rows(n: int, seed: int = 0) -> list[dict]:
    """Separable sentiment: two sentiment words among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("negative", "positive")[i % 2]
        words = rng.sample(POSITIVE if label == "positive" else NEGATIVE, 2) + rng.sample(FILLER, 5)
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" {i}", "label": label})
    return rows


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    corpus = [r["text"] for r in make_reviews(300, seed=3)] + [r["text"] for r in easy_rows(100)]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert") / "model", corpus)


def prepare(tmp: Path, rows: list[dict], seed: int = 42) -> dict[str, str]:
    """raw rows -> clean -> split with the stage functions; the paths of every output."""
    paths = {k: str(tmp / f"{k}.jsonl") for k in ("raw", "clean", "rejected", "train", "val", "test")}
    paths.update(
        clean_stats=str(tmp / "clean_stats.json"),
        split_stats=str(tmp / "split_stats.json"),
        labels=str(tmp / "labels.json"),
    )
    write_jsonl(paths["raw"], rows)
    clean_classification_data(paths["raw"], CleanOutputs(paths["clean"], paths["rejected"], paths["clean_stats"]))
    split_out = SplitOutputs(paths["train"], paths["val"], paths["test"], paths["split_stats"])
    split_classification_data(paths["clean"], paths["clean_stats"], split_out, paths["labels"], FRACTIONS, seed)
    return paths


@pytest.fixture(scope="module")
def easy_data(tmp_path_factory) -> dict[str, str]:
    return prepare(tmp_path_factory.mktemp("easy"), easy_rows(400))


TRAIN = dict(
    r=4,
    lora_alpha=8,
    target_modules="qv",
    learning_rate=0.02,
    batch_size=16,
    max_steps=150,
    warmup_steps=3,
    eval_every=25,
    lora_dropout=0.0,
    threads=1,
    seed=0,
)


def fit_classifier(model_dir, data, **hp):
    """The classifier task and the shared loop's in-memory result (nothing written)."""
    from loraflow.binding import build
    from loraflow.tasks.seq_cls.settings import ClassifierInputs
    from loraflow.tasks.seq_cls.train import SequenceClassification
    from loraflow.train.loop import fit
    from loraflow.train.settings import GridPoint, LoopRuntime, LoopSettings, TrainSettings

    pool = dict(
        model_dir=str(model_dir), train_path=data["train"], val_path=data["val"], labels_path=data["labels"], **hp
    )
    inputs, point, train, runtime = (
        build(cls, pool) for cls in (ClassifierInputs, GridPoint, TrainSettings, LoopRuntime)
    )
    task = SequenceClassification(inputs=inputs, point=point, lora_dropout=train.lora_dropout)
    return task, fit(
        task, LoopSettings(train=train, runtime=runtime, learning_rate=pool.pop("learning_rate"), seed=point.seed)
    )


@pytest.fixture(scope="module")
def fitted(tiny_bert, easy_data, tmp_path_factory):
    from loraflow.train.loop import save_run
    from loraflow.train.settings import RunOutputs

    out = tmp_path_factory.mktemp("run")
    task, run = fit_classifier(tiny_bert, easy_data, **TRAIN)
    stats = save_run(
        task, run, RunOutputs(str(out / "adapter"), str(out / "train_log.csv"), str(out / "train_stats.json"))
    )
    return (task, run), stats, out


# --- data ------------------------------------------------------------------------------------------


def test_builtin_reviews_are_seeded_bilingual_and_balanced():
    rows = make_reviews(300, seed=5)
    assert rows == make_reviews(300, seed=5) and rows != make_reviews(300, seed=6)
    labelled = [r for r in rows if r.get("label")]
    assert Counter(r["label"] for r in labelled).keys() == {"positive", "negative"}
    assert abs(Counter(r["label"] for r in labelled)["positive"] - len(labelled) / 2) < 10
    zh = sum(has_cjk(r["text"]) for r in labelled)
    assert 0.35 < zh / len(labelled) < 0.65


def test_every_row_ends_in_exactly_one_split(tmp_path):
    paths = prepare(tmp_path, make_reviews(300, seed=7))
    place = Counter()
    for name in ("train", "val", "test", "rejected"):
        for row in read_jsonl(paths[name]):
            place[row["line"]] += 1
    assert sorted(place) == list(range(1, 301)) and set(place.values()) == {1}
    reasons = Counter(r["reason"] for r in read_jsonl(paths["rejected"]))
    assert {"empty_text", "missing_label", "duplicate", "too_long"} <= set(reasons)
    stats = read_json(paths["split_stats"])
    assert stats["conserved"] and stats["rows_in"] == 300
    labels = read_json(paths["labels"])
    assert labels["labels"] == ["negative", "positive"] and labels["id2label"] == {"0": "negative", "1": "positive"}
    assert all(r["label_id"] == labels["label2id"][r["label"]] for r in read_jsonl(paths["train"]))


def test_split_is_stratified_and_independent_of_row_order():
    rows = [
        {"id": str(i), "line": i, "text": f"t{i}", "label": "a" if i % 4 else "b"} for i in range(1, 201)
    ]  # 150 a, 50 b
    parts = stratified_split(rows, FRACTIONS, seed=1, labels=["a", "b"])
    assert {s: Counter(r["label"] for r in p) for s, p in parts.items()} == {
        "train": {"a": 120, "b": 40},
        "val": {"a": 15, "b": 5},
        "test": {"a": 15, "b": 5},
    }
    shuffled = random.Random(0).sample(rows, len(rows))
    assert stratified_split(shuffled, FRACTIONS, seed=1, labels=["a", "b"]) == parts
    assert stratified_split(rows, FRACTIONS, seed=2, labels=["a", "b"]) != parts


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"text": "fine", "label": "a"}\n{"text": "also fine", "label": "b"}\n{"text": "broken", "label"\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=f"{path}:3: malformed JSON"):
        clean_rows(iter_raw_rows(str(path)), str(path))
    clean, rejected, stats = clean_rows(iter_raw_rows(str(path)), str(path), on_bad_row="reject")
    assert len(clean) == 2 and [(r["line"], r["reason"]) for r in rejected] == [(3, "bad_json")] and stats["conserved"]


def test_rejection_reasons_and_integer_labels(tmp_path):
    path = tmp_path / "imdb.csv"
    path.write_text(
        "review,sentiment\nGreat film,1\nDull plot,0\n,1\nNo label here,\nGreat film,1\nGreat film,0\nFine,2\nOK <br "
        "/>movie,10\n",
        encoding="gb18030",
    )
    clean, rejected, _ = clean_rows(iter_raw_rows(str(path), encoding="gb18030"), str(path), "review", "sentiment")
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (4, "empty_text"),
        (5, "missing_label"),
        (6, "duplicate"),
        (7, "label_conflict"),
    ]
    assert [(r["text"], r["label"]) for r in clean] == [
        ("Great film", "1"),
        ("Dull plot", "0"),
        ("Fine", "2"),
        ("OK movie", "10"),
    ]
    from loraflow.tasks.seq_cls.data import label_order

    assert label_order(r["label"] for r in clean) == ["0", "1", "2", "10"]  # numeric order = IMDB ids
    _, rejected, _ = clean_rows(
        iter_raw_rows(str(path), encoding="gb18030"), str(path), "review", "sentiment", labels=[0, 1]
    )
    assert Counter(r["reason"] for r in rejected)["unknown_label"] == 2
    long = tmp_path / "long.jsonl"
    write_jsonl(long, [{"text": "x" * 50, "label": "a"}, {"text": "short", "label": "b"}])
    _, rejected, _ = clean_rows(iter_raw_rows(str(long)), str(long), max_chars=20)
    assert [r["reason"] for r in rejected] == ["too_long"]


def test_seq_cls_config_checks(tmp_path):
    config = validate_config({"task": "seq_cls", "grid": {"method": ["lora", "qlora"]}})
    assert config["classify"]["base_model"] == "builtin" and config["classify"]["max_length"] == 256
    with pytest.raises(ConfigError, match="grid.method: 'qlora' is not available with task seq_cls"):
        check_config(config)
    with pytest.raises(ConfigError, match="grid.method"):
        check_method("full")
    with pytest.raises(ConfigError, match="classify.data"):
        check_config(validate_config({"task": "seq_cls", "classify": {"data": str(tmp_path / "missing.csv")}}))
    with pytest.raises(ConfigError, match="classify.text_colum"):
        validate_config({"task": "seq_cls", "classify": {"text_colum": "review"}})


# --- model -----------------------------------------------------------------------------------------


def test_training_learns_and_saves_the_head(fitted):
    from safetensors.torch import load_file

    _, stats, out = fitted
    assert stats["best_val_accuracy"] >= 85  # chance is 50
    assert stats["head_modules"] == ["classifier"] and stats["resolved_target_modules"] == ["query", "value"]
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= set(saved)
    assert any("lora_A" in k for k in saved)
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["step"]) == list(range(1, 151)) and log["val_accuracy"].notna().sum() == 6
    assert 0 < stats["trainable_pct"] < 100 and stats["adapter_mb"] > 0


def test_training_is_deterministic(tiny_bert, easy_data):
    import torch

    (_, a), (_, b) = (fit_classifier(tiny_bert, easy_data, **{**TRAIN, "max_steps": 10}) for _ in range(2))
    state_b = dict(b.model.named_parameters())
    assert all(torch.equal(p, state_b[n]) for n, p in a.model.named_parameters() if p.requires_grad)


def test_peft_from_pretrained_reproduces_in_memory_predictions(fitted, tiny_bert, easy_data, tmp_path):
    import numpy as np
    import torch

    from loraflow.tasks.seq_cls.evaluate import ClassifierEvalPaths, ClassifierEvalSettings, evaluate_adapter
    from loraflow.tasks.seq_cls.model import encode, predict_logits

    (task, run), _, out = fitted
    test = read_jsonl(easy_data["test"])
    ids, _ = encode(task.tokenizer, [r["text"] for r in test], 256)
    in_memory = (
        torch.from_numpy(predict_logits(run.model, task.tokenizer, ids, 8, torch.device("cpu"))).softmax(-1).numpy()
    )
    paths = ClassifierEvalPaths(
        easy_data["val"],
        easy_data["test"],
        easy_data["labels"],
        str(tmp_path / "eval.json"),
        str(tmp_path / "predictions.jsonl"),
    )
    result = evaluate_adapter(
        str(tiny_bert), str(out / "adapter"), paths, ClassifierEvalSettings(batch_size=5, seed=123), threads=1
    )
    assert result["head_from_adapter"] and result["head_tensors"] == [
        "base_model.model.classifier.bias",
        "base_model.model.classifier.weight",
    ]
    preds = read_jsonl(tmp_path / "predictions.jsonl")
    labels = read_json(easy_data["labels"])["labels"]
    assert [p["pred"] for p in preds] == [labels[i] for i in in_memory.argmax(-1)]
    np.testing.assert_allclose([p["confidence"] for p in preds], in_memory.max(-1), atol=1e-4)
    assert result["test"]["accuracy"] >= 80 and sum(map(sum, result["test"]["confusion_matrix"])) == len(test)


def test_head_check_catches_an_untrained_head(fitted, tiny_bert, tmp_path):
    """An adapter whose head was never trained (equal to the random init) is refused."""
    import torch
    from peft import PeftModel

    from loraflow.tasks.seq_cls.evaluate import check_head_from_adapter
    from loraflow.tasks.seq_cls.model import ADAPTER_PREFIX, load_classifier
    from loraflow.tasks.seq_cls.train import lora_classifier

    torch.manual_seed(0)
    base = load_classifier(str(tiny_bert), ["negative", "positive"], torch.device("cpu"))
    initial = {
        ADAPTER_PREFIX + n: p.detach().clone() for n, p in base.named_parameters() if n.startswith("classifier.")
    }
    lora_classifier(base, 2, 4, "qv").save_pretrained(tmp_path / "untrained")
    torch.manual_seed(0)
    fresh = load_classifier(str(tiny_bert), ["negative", "positive"], torch.device("cpu"))
    with pytest.raises(RuntimeError, match="never trained"):
        check_head_from_adapter(
            PeftModel.from_pretrained(fresh, tmp_path / "untrained"),
            str(tmp_path / "untrained"),
            ["classifier"],
            initial,
        )


@pytest.mark.parametrize("method,flag", [("dora", "use_dora"), ("rslora", "use_rslora")])
def test_methods_set_their_flag(method, flag, tiny_bert, easy_data, tmp_path):
    from loraflow.tasks.seq_cls.train import train_classifier

    stats = train_classifier(
        **bind(
            train_classifier,
            dict(
                model_dir=str(tiny_bert),
                train_path=easy_data["train"],
                val_path=easy_data["val"],
                labels_path=easy_data["labels"],
                out_adapter=str(tmp_path / "adapter"),
                out_log=str(tmp_path / "log.csv"),
                out_stats=str(tmp_path / "stats.json"),
                **{**TRAIN, "max_steps": 1, "method": method},
            ),
        )
    )
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config[flag] is True and config["task_type"] == "SEQ_CLS" and "classifier" in config["modules_to_save"]
    assert stats["method"] == method


def test_target_modules_that_do_not_match_raise(tiny_bert):
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from loraflow.model.targets import TargetModuleError
    from loraflow.tasks.seq_cls.model import load_classifier
    from loraflow.tasks.seq_cls.train import lora_classifier

    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=4, hidden_dim=64)
    )
    with pytest.raises(TargetModuleError, match=r"preset 'qv' \(distilbert names\): q_proj, v_proj not found.*q_lin"):
        lora_classifier(distil, 2, 4, "qv")
    bert = load_classifier(str(tiny_bert), ["a", "b"], torch.device("cpu"))
    with pytest.raises(TargetModuleError, match="q_proj not found in BertForSequenceClassification"):
        lora_classifier(bert, 2, 4, ["q_proj"])


def test_baselines_and_table(fitted, tiny_bert, easy_data, tmp_path):
    from loraflow.report.settings import ClassifierTableInputs
    from loraflow.tasks.seq_cls.evaluate import (
        ClassifierEvalPaths,
        ClassifierEvalSettings,
        evaluate_adapter,
        evaluate_majority,
        evaluate_untrained_head,
    )
    from loraflow.tasks.seq_cls.table import write_comparison

    _, stats, out = fitted
    d = tmp_path / "baselines"
    majority = evaluate_majority(
        easy_data["train"],
        easy_data["val"],
        easy_data["test"],
        easy_data["labels"],
        str(d / "majority/eval.json"),
        str(d / "majority/predictions.jsonl"),
    )
    test = read_jsonl(easy_data["test"])
    assert majority["test"]["accuracy"] == pytest.approx(
        100 * Counter(r["label"] for r in test)[majority["majority_label"]] / len(test)
    )
    args = (easy_data["val"], easy_data["test"], easy_data["labels"])
    seed0 = ClassifierEvalSettings(seed=0)
    untrained = evaluate_untrained_head(
        str(tiny_bert),
        ClassifierEvalPaths(*args, str(d / "untrained_head/eval.json"), str(d / "untrained_head/p.jsonl")),
        seed0,
        threads=1,
    )
    assert untrained == evaluate_untrained_head(
        str(tiny_bert),
        ClassifierEvalPaths(*args, str(tmp_path / "again.json"), str(tmp_path / "again.jsonl")),
        seed0,
        threads=1,
    )
    evaluate_adapter(
        str(tiny_bert),
        str(out / "adapter"),
        ClassifierEvalPaths(*args, str(out / "eval.json"), str(out / "predictions.jsonl")),
        ClassifierEvalSettings(),
        threads=1,
    )
    runs = {"r4_a8_qv": {"method": "lora", "r": 4, "lora_alpha": 8.0, "targets": "qv"}}
    inputs = ClassifierTableInputs(
        [str(d / "majority/eval.json"), str(d / "untrained_head/eval.json")],
        [str(out / "train_stats.json")],
        [str(out / "eval.json")],
    )
    df = write_comparison(inputs, str(tmp_path / "comparison.csv"), str(tmp_path / "comparison.md"), runs)
    assert list(df["run"]) == ["majority", "untrained_head", "r4_a8_qv"] and list(df["best"]) == [
        "",
        "",
        "best (macro_f1)",
    ]
    assert {"val_accuracy", "test_accuracy", "macro_f1", "trainable_params", "f1_positive"} <= set(df.columns)
    md = (tmp_path / "comparison.md").read_text()
    assert "Best run by `macro_f1`: **r4_a8_qv**" in md and "| majority |" in md


# --- the shared training loop: precision, resume, several processes ----------------------------------


def cls_args(tiny_bert, data, out: Path, **hp) -> dict:
    return dict(
        model_dir=str(tiny_bert),
        train_path=data["train"],
        val_path=data["val"],
        labels_path=data["labels"],
        out_adapter=str(out / "adapter"),
        out_log=str(out / "log.csv"),
        out_stats=str(out / "stats.json"),
        **{**TRAIN, **hp},
    )


def test_classifier_trains_in_bf16(tiny_bert, easy_data, tmp_path):
    """precision bf16: forward passes under bf16 autocast (other losses than fp32 from the same start),
    weights and head kept in fp32, the precision recorded, and it still learns."""
    import torch
    from safetensors.torch import load_file

    from loraflow.tasks.seq_cls.train import train_classifier

    stats = {
        p: train_classifier(
            **bind(train_classifier, cls_args(tiny_bert, easy_data, tmp_path / p, precision=p, max_steps=100))
        )
        for p in ("fp32", "bf16")
    }
    assert (
        stats["bf16"]["precision"] == "bf16" and stats["fp32"]["precision"] == "fp32" and stats["bf16"]["steps"] == 100
    )
    saved = load_file(tmp_path / "bf16" / "adapter" / "adapter_model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32} and any("classifier" in k for k in saved)
    bf16, fp32 = (pd.read_csv(tmp_path / p / "log.csv")["train_loss"] for p in ("bf16", "fp32"))
    assert (bf16 != fp32).any()  # computed in bf16 ...
    assert abs(bf16[0] - fp32[0]) < 0.01  # ... from the same seed, data order and initialisation
    assert stats["bf16"]["best_val_accuracy"] >= 85  # it learns (chance is 50)


def test_killed_classifier_resumes_to_the_identical_adapter(tiny_bert, easy_data, tmp_path, caplog):
    """As tests/test_resume.py for the causal LM: kill -9 mid-run, rerun, same adapter and log as an
    uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    from helpers import kill_after_first_checkpoint
    from loraflow.tasks.seq_cls.train import train_classifier

    hp = dict(max_steps=60, eval_every=10, checkpoint_every=5, lora_dropout=0.1)  # dropout: the RNG must resume too
    reference = train_classifier(
        **bind(
            train_classifier,
            cls_args(tiny_bert, easy_data, tmp_path / "ref", checkpoint_dir=str(tmp_path / "ckpt_ref"), **hp),
        )
    )
    assert not (tmp_path / "ckpt_ref").exists()  # cleared after success
    args = cls_args(tiny_bert, easy_data, tmp_path / "killed", checkpoint_dir=str(tmp_path / "ckpt"), **hp)
    killed_at = kill_after_first_checkpoint("loraflow.tasks.seq_cls.train", "train_classifier", args, tmp_path / "ckpt")
    assert killed_at < hp["max_steps"] and not (tmp_path / "killed" / "adapter").exists()

    with caplog.at_level("INFO", logger="loraflow.train.loop"):
        resumed = train_classifier(**bind(train_classifier, args))
    assert f"resumed from checkpoint at step {killed_at}" in caplog.text
    a = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # LoRA and head bit-identical on CPU
    assert (
        resumed["best_val_accuracy"] == reference["best_val_accuracy"]
        and resumed["best_step"] == reference["best_step"]
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "ref" / "log.csv").drop(columns="elapsed_s"),
        pd.read_csv(tmp_path / "killed" / "log.csv").drop(columns="elapsed_s"),
    )


@pytest.mark.slow  # two torchrun processes start
def test_classifier_two_processes_equal_one_with_the_same_global_batch(tiny_bert, easy_data, tmp_path):
    """As tests/test_distributed.py for the causal LM: two torchrun ranks (gloo) = one process with grad_accum 2."""
    import torch
    from safetensors.torch import load_file

    from loraflow.tasks.seq_cls.train import train_classifier

    model = (
        tmp_path / "model"
    )  # the encoder without its own dropout: the ranks draw other dropout masks than one process
    shutil.copytree(tiny_bert, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(
        json.dumps({**config, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    )
    hp = dict(max_steps=4, eval_every=2, batch_size=8)
    one = train_classifier(**bind(train_classifier, cls_args(model, easy_data, tmp_path / "one", grad_accum=2, **hp)))
    two = train_classifier(
        **bind(train_classifier, cls_args(model, easy_data, tmp_path / "two", grad_accum=1, nproc_per_node=2, **hp))
    )
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["tokens_seen"] == two["tokens_seen"] and one["steps"] == two["steps"] == 4
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any("classifier" in k for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    pd.testing.assert_series_equal(
        pd.read_csv(tmp_path / "one" / "log.csv")["train_loss"],
        pd.read_csv(tmp_path / "two" / "log.csv")["train_loss"],
        atol=1e-5,
    )


# --- workflow --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_seq_cls_workflow(tiny_bert, tmp_path):
    """The shared stage rules with task seq_cls end to end through Snakemake on the tiny BERT and 120 generated
    reviews."""
    config = {
        "task": "seq_cls",
        "torch_threads": 1,
        "classify": {"base_model": str(tiny_bert), "builtin_rows": 120, "max_length": 64},
        "grid": {"r": [2, 4], "lora_alpha": [8], "target_modules": ["qv"]},
        "train": {"max_steps": 4, "batch_size": 8, "eval_every": 2, "learning_rate": 0.01},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    res = tmp_path / "results"
    table = pd.read_csv(res / "comparison.csv")
    assert list(table["run"]) == ["majority", "untrained_head", "r2_a8_qv", "r4_a8_qv"]
    assert (table["best"].fillna("") != "").sum() == 1
    assert table.loc[2, "trainable_params"] < table.loc[3, "trainable_params"]
    assert read_json(res / "data/split_stats.json")["conserved"]
    assert all(read_json(res / f"runs/{run}/eval.json")["head_from_adapter"] for run in ("r2_a8_qv", "r4_a8_qv"))
    assert "Best run by `macro_f1`" in proc.stdout + proc.stderr  # printed at the end
    logs = {p.relative_to(res / "logs").as_posix() for p in (res / "logs").rglob("*.log")}
    # the shared stage rules and the seq_cls baselines ran, none of the causal LM's own stages
    assert {name.split("/")[0].removesuffix(".log") for name in logs} == {
        "base_model",
        "builtin_dataset",
        "clean",
        "split",
        "train",
        "evaluate",
        "table",
    }, logs
    assert {"evaluate/untrained_head.log", "evaluate/majority.log"} <= logs
    dry = subprocess.run([*cmd, "-n"], capture_output=True, text=True, env=env)
    assert "Nothing to be done" in dry.stdout + dry.stderr

    def planned(train_change: dict) -> set[str]:
        """The rules a dry run plans after changing `train` keys."""
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, "train": {**config["train"], **train_change}}))
        out = subprocess.run([*cmd, "-n", "--quiet", "rules"], capture_output=True, text=True, env=env).stdout
        return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", out, flags=re.M)} - {"total"}

    # the shared loop's settings reach train: precision and processes change results, checkpoints do not
    assert {"train", "evaluate", "table"} <= planned({"precision": "bf16"})
    assert "train" in planned({"nproc_per_node": 2})
    assert planned({"checkpoint_every": 3}) == set()
