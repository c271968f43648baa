"""Evaluate stage of task seq_cls: every run and two baselines, scored the same way on val and test.

A run is loaded the way a user would load it:
`PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=...), adapter)`.
The head that model then uses must be the trained one stored in the adapter, not the random one
from_pretrained created: `check_head_from_adapter` compares them tensor by tensor.

Baselines: `majority` always predicts the most frequent training label; `untrained_head` is the base
encoder with a seeded, untrained head (the starting point of every run with the same seed).
Metrics: accuracy and macro-F1 (0-100), per-class precision/recall/F1, confusion matrix (rows: true
label, columns: prediction) and accuracy by script (CJK / other) when both occur.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from loraflow.evaluate.metrics import accuracy_macro_f1, has_cjk
from loraflow.io import read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierEvalSettings:
    """What decides a classifier's scores: batch size, token cap, the seed of the untrained baseline head."""

    batch_size: int = 32
    max_length: int = 256
    seed: int = 42
    trust_remote_code: bool = False


@dataclass(frozen=True)
class ClassifierEvalPaths:
    """The labelled splits an evaluate job scores and the files it writes."""

    val_path: str
    test_path: str
    labels_path: str
    out_metrics: str
    out_predictions: str


def classification_report(preds: list[int], y: list[int], labels: list[str], texts: list[str]) -> dict:
    """Accuracy, macro-F1, per-class scores, confusion matrix and accuracy by script."""
    k = len(labels)
    confusion = np.zeros((k, k), dtype=int)
    for p, t in zip(preds, y):
        confusion[t, p] += 1
    per_class = {}
    for i, label in enumerate(labels):
        tp, fp, fn = confusion[i, i], confusion[:, i].sum() - confusion[i, i], confusion[i, :].sum() - confusion[i, i]
        precision = 100 * tp / (tp + fp) if tp + fp else 0.0
        recall = 100 * tp / (tp + fn) if tp + fn else 0.0
        f1 = 100 * 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        per_class[label] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(confusion[i].sum()),
        }
    report = {
        "n": len(y),
        **accuracy_macro_f1(list(preds), list(y)),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
    scripts = ["cjk" if has_cjk(t) else "other" for t in texts]
    if len(set(scripts)) > 1:
        report["accuracy_by_script"] = {
            s: {
                "n": scripts.count(s),
                "accuracy": 100 * sum(p == t for p, t, x in zip(preds, y, scripts) if x == s) / scripts.count(s),
            }
            for s in ("cjk", "other")
        }
    return report


def _prediction_rows(rows: list[dict], probs: np.ndarray, labels: list[str]) -> list[dict]:
    out = []
    for row, p in zip(rows, probs):
        pred = int(p.argmax())
        out.append(
            {
                "id": row["id"],
                "text": row["text"],
                "label": row["label"],
                "pred": labels[pred],
                "confidence": round(float(p[pred]), 5),
                "correct": labels[pred] == row["label"],
            }
        )
    return out


def _score(
    split_rows: dict[str, list[dict]], probs: dict[str, np.ndarray], labels: list[str]
) -> tuple[dict, list[dict]]:
    """(metrics per split, test prediction rows) from class probabilities per split."""
    label2id = {x: i for i, x in enumerate(labels)}
    metrics = {}
    for split, rows in split_rows.items():
        preds = probs[split].argmax(-1).tolist()
        metrics[split] = classification_report(
            preds, [label2id[r["label"]] for r in rows], labels, [r["text"] for r in rows]
        )
    return metrics, _prediction_rows(split_rows["test"], probs["test"], labels)


def _write(out_metrics: str, out_predictions: str, info: dict, metrics: dict, predictions: list[dict]) -> dict:
    result = {**info, **metrics}
    write_jsonl(out_predictions, predictions)
    write_json(out_metrics, result)
    log.info(
        "%s: test accuracy %.2f macro-F1 %.2f (val accuracy %.2f)",
        info["model"],
        metrics["test"]["accuracy"],
        metrics["test"]["macro_f1"],
        metrics["val"]["accuracy"],
    )
    return result


def _model_probs(
    model, model_dir: str, splits: dict[str, list[dict]], batch_size: int, max_length: int, device
) -> dict[str, np.ndarray]:
    import torch

    from loraflow.tasks.seq_cls.model import encode, load_tokenizer, predict_logits

    tokenizer = load_tokenizer(model_dir)
    probs = {}
    for split, rows in splits.items():
        ids, _ = encode(tokenizer, [r["text"] for r in rows], max_length)
        probs[split] = torch.from_numpy(predict_logits(model, tokenizer, ids, batch_size, device)).softmax(-1).numpy()
    return probs


def check_head_from_adapter(model, adapter_dir: str, heads: list[str], initial: dict) -> list[str]:
    """Check that the head `model` (a PeftModel) uses is exactly the one saved in the adapter, and
    not the random one it was created with (`initial`: name -> tensor before loading the adapter).
    Returns the head tensor names."""
    import torch

    from loraflow.tasks.seq_cls.model import adapter_head_tensors

    saved = adapter_head_tensors(adapter_dir, heads)
    live = {
        n.replace(".modules_to_save.default", ""): p
        for n, p in model.named_parameters()
        if ".modules_to_save.default." in n
    }
    if not saved or set(saved) != set(live):
        raise RuntimeError(
            f"classification head mismatch: adapter holds {sorted(saved)}, the loaded model trains {sorted(live)}"
        )
    for name, tensor in saved.items():
        if not torch.equal(live[name].detach().cpu(), tensor.to(live[name].dtype)):
            raise RuntimeError(f"{name}: the loaded model's head is not the one stored in {adapter_dir}")
    if all(torch.equal(initial[name], saved[name].to(initial[name].dtype)) for name in saved):
        raise RuntimeError(
            f"the head stored in {adapter_dir} equals a fresh random initialisation: it was never trained"
        )
    return sorted(saved)


def _splits(val_path: str, test_path: str) -> dict[str, list[dict]]:
    return {"val": read_jsonl(val_path), "test": read_jsonl(test_path)}


def _seeded_classifier(model_dir: str, labels_path: str, settings: ClassifierEvalSettings, threads: int | None):
    """(the encoder with a head initialised from `settings.seed`, the labels, the device)."""
    from loraflow.model.device import pick_device, set_seed, set_threads
    from loraflow.tasks.seq_cls.model import load_classifier, read_labels

    set_threads(threads)
    set_seed(settings.seed)
    device = pick_device()
    labels = read_labels(labels_path)
    return load_classifier(model_dir, labels, device, settings.trust_remote_code), labels, device


def _evaluate_model(
    model,
    model_dir: str,
    labels: list[str],
    device,
    paths: ClassifierEvalPaths,
    info: dict,
    settings: ClassifierEvalSettings,
) -> dict:
    splits = _splits(paths.val_path, paths.test_path)
    probs = _model_probs(model, model_dir, splits, settings.batch_size, settings.max_length, device)
    metrics, predictions = _score(splits, probs, labels)
    return _write(paths.out_metrics, paths.out_predictions, info, metrics, predictions)


def evaluate_adapter(
    model_dir: str,
    adapter_dir: str,
    paths: ClassifierEvalPaths,
    settings: ClassifierEvalSettings,
    threads: int | None = None,
) -> dict:
    """Stage entry point for a run: base + adapter through PeftModel.from_pretrained."""
    from peft import PeftModel

    from loraflow.tasks.seq_cls.model import ADAPTER_PREFIX, head_modules

    base, labels, device = _seeded_classifier(model_dir, paths.labels_path, settings, threads)
    heads = head_modules(base)
    initial = {
        ADAPTER_PREFIX + n: p.detach().cpu().clone() for n, p in base.named_parameters() if n.split(".")[0] in heads
    }
    model = PeftModel.from_pretrained(base, adapter_dir).to(device)
    head_tensors = check_head_from_adapter(model, adapter_dir, heads, initial)
    info = {"model": "adapter", "adapter_dir": adapter_dir, "head_from_adapter": True, "head_tensors": head_tensors}
    return _evaluate_model(model, model_dir, labels, device, paths, info, settings)


def evaluate_untrained_head(
    model_dir: str, paths: ClassifierEvalPaths, settings: ClassifierEvalSettings, threads: int | None = None
) -> dict:
    """Stage entry point for the baseline: the base encoder with a seeded, untrained head."""
    model, labels, device = _seeded_classifier(model_dir, paths.labels_path, settings, threads)
    return _evaluate_model(
        model, model_dir, labels, device, paths, {"model": "untrained_head", "seed": settings.seed}, settings
    )


def evaluate_majority(
    train_path: str, val_path: str, test_path: str, labels_path: str, out_metrics: str, out_predictions: str
) -> dict:
    """Stage entry point for the baseline that always predicts the most frequent training label."""
    from loraflow.tasks.seq_cls.model import read_labels

    labels = read_labels(labels_path)
    counts = Counter(r["label"] for r in read_jsonl(train_path))
    freq = np.array([counts.get(x, 0) for x in labels], dtype=np.float64) / sum(counts.values())
    majority = int(freq.argmax())  # ties: the first label
    scores = np.zeros(len(labels))
    scores[majority] = freq[majority]  # its confidence: the label's share of the training split
    splits = _splits(val_path, test_path)
    probs = {s: np.tile(scores, (len(rows), 1)) for s, rows in splits.items()}
    metrics, predictions = _score(splits, probs, labels)
    return _write(
        out_metrics, out_predictions, {"model": "majority", "majority_label": labels[majority]}, metrics, predictions
    )
