"""Train stage of task seq_cls: LoRA on the encoder plus a trained classification head, per grid point,
through the shared training loop (loraflow.train.loop), so precision, resume and several processes
work as for the causal LM.

peft's SEQ_CLS task type wraps the head (`classifier`, ...) in `modules_to_save`: the head is new,
so it is trained in full and saved inside the adapter next to the LoRA matrices. Examples are texts
tokenised up to `classify.max_length` tokens with their label id; a micro-batch is one dynamically
padded forward pass, its loss the summed cross-entropy. Validation accuracy, macro-F1 and loss every
`eval_every` steps, in fp32 as the evaluate stage runs; the best validation accuracy (ties: lower
validation loss) wins and is what gets saved. With `precision: bf16` the weights stay fp32 (the
encoder is small, and the new head must be trained in fp32) and the forward passes run under bf16
autocast.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from loraflow.evaluate.metrics import accuracy_macro_f1
from loraflow.io import read_jsonl
from loraflow.tasks.seq_cls.data import check_method
from loraflow.tasks.seq_cls.model import (
    adapter_head_tensors, collate, encode, head_modules, load_classifier, load_tokenizer, predict_logits, read_labels, unk_fraction,
)
from loraflow.train.loop import LOOP_KEYS, relaunch, run_hparams, train

log = logging.getLogger(__name__)


def lora_classifier(model, r: int, lora_alpha: float, target_modules, lora_dropout: float = 0.05, method: str = "lora"):
    """Wrap a sequence-classification model with LoRA (`method` lora, dora or rslora); the head
    modules are trained in full and saved with the adapter."""
    from peft import get_peft_model

    from loraflow.model.methods import lora_config

    check_method(method)
    heads = head_modules(model)
    config = lora_config(method, r, lora_alpha, target_modules, lora_dropout, task_type="SEQ_CLS",
                         modules_to_save=list(heads), model=model)  # peft extends modules_to_save in place
    peft_model = get_peft_model(model, config)
    untrained = [h for h in heads if not any(p.requires_grad for n, p in peft_model.named_parameters() if f".{h}.modules_to_save." in n)]
    if untrained:
        raise RuntimeError(f"the classification head {untrained} would not be trained; modules_to_save={config.modules_to_save}")
    return peft_model


def evaluate_split(model, tokenizer, ids: list[list[int]], y: list[int], batch_size: int, device) -> dict:
    """Mean cross-entropy, accuracy and macro-F1 (0-100) of `model` on one split."""
    logits = torch.from_numpy(predict_logits(model, tokenizer, ids, batch_size, device))
    loss = F.cross_entropy(logits, torch.tensor(y)).item()
    return {"loss": loss, **accuracy_macro_f1(logits.argmax(-1).tolist(), list(y))}


def _listed(targets):
    """peft keeps target_modules as a set of names, or one regex string."""
    return targets if isinstance(targets, str) else sorted(targets)


class SequenceClassification:
    """The seq_cls task (loraflow.tasks.base.Task) for one grid point."""

    eval_fields = ["val_loss", "val_accuracy", "val_macro_f1"]

    def __init__(self, model_dir: str, train_path: str, val_path: str, labels_path: str, r: int, lora_alpha: float, target_modules,
                 method: str = "lora", lora_dropout: float = 0.05, max_length: int = 256, eval_batch_size: int = 32,
                 trust_remote_code: bool = False):
        check_method(method)
        self.model_dir, self.method, self.r, self.lora_alpha, self.target_modules = model_dir, method, r, lora_alpha, target_modules
        self.lora_dropout, self.max_length, self.eval_batch_size, self.trust_remote_code = lora_dropout, max_length, eval_batch_size, trust_remote_code
        self.paths = {"train": train_path, "val": val_path}
        self.fingerprint_files = [train_path, val_path, labels_path]
        self.labels = read_labels(labels_path)
        self.tokenizer = load_tokenizer(model_dir)
        self.splits: dict[str, list] = {}
        self.truncated: dict[str, int] = {}

    def examples(self, split: str) -> list[tuple[list[int], int]]:
        """(token ids, label id) per row of the split."""
        if split not in self.splits:
            label2id = {x: i for i, x in enumerate(self.labels)}
            rows = read_jsonl(self.paths[split])
            ids, self.truncated[split] = encode(self.tokenizer, [r["text"] for r in rows], self.max_length)
            self.splits[split] = [(x, label2id[r["label"]]) for x, r in zip(ids, rows)]
        return self.splits[split]

    def length(self, example) -> int:
        return len(example[0])

    def build(self, device: torch.device, precision: str):
        self.device = device
        model = load_classifier(self.model_dir, self.labels, device, self.trust_remote_code)  # head initialised from the seed
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.heads = head_modules(model)
        model = lora_classifier(model, self.r, self.lora_alpha, self.target_modules, self.lora_dropout, self.method)
        self.resolved_targets = _listed(model.peft_config["default"].target_modules)
        train = self.examples("train")
        log.info("%s r=%s alpha=%s targets=%s head=%s on %s, %s compute; %d train rows (%d truncated to %d tokens)", self.method,
                 self.r, self.lora_alpha, self.target_modules, self.heads, device, precision, len(train), self.truncated["train"],
                 self.max_length)
        return model

    def targets(self, examples: list) -> int:
        return len(examples)

    def forwards(self, examples: list):
        return [(collate(self.tokenizer, [ids for ids, _ in examples], self.device), torch.tensor([y for _, y in examples], device=self.device))]

    def loss_sum(self, model, batch) -> torch.Tensor:
        inputs, y = batch
        return F.cross_entropy(model(**inputs).logits.float(), y, reduction="sum")

    def validate(self, model) -> dict[str, float]:
        val = self.examples("val")
        m = evaluate_split(model, self.tokenizer, [ids for ids, _ in val], [y for _, y in val], self.eval_batch_size, self.device)
        return {"val_loss": round(m["loss"], 5), "val_accuracy": round(m["accuracy"], 3), "val_macro_f1": round(m["macro_f1"], 3)}

    def rank(self, metrics: dict[str, float]) -> tuple:
        return (metrics["val_accuracy"], -metrics["val_loss"])

    def save(self, model, out_dir: str) -> dict:
        """The adapter (LoRA + head, safetensors) with the tokenizer, so the directory is usable on its own."""
        model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)
        saved = adapter_head_tensors(out_dir, self.heads)
        if not saved:
            raise RuntimeError(f"the adapter in {out_dir} does not contain the classification head {self.heads}")
        return {"head_tensors": sorted(saved)}

    def stats(self, state: dict) -> dict:
        best = state["best"] or {}
        train = self.examples("train")
        return {
            "method": self.method, "r": self.r, "lora_alpha": self.lora_alpha, "target_modules": self.target_modules,
            "resolved_target_modules": self.resolved_targets, "head_modules": self.heads, "num_labels": len(self.labels),
            "best_val_accuracy": best.get("val_accuracy", -1.0), "best_val_macro_f1": best.get("val_macro_f1", 0.0),
            "best_val_loss": best.get("val_loss", math.inf), "examples_per_s": state["supervised_seen"] / max(state["elapsed_s"], 1e-9),
            "train_rows": len(train), "truncated_rows": self.truncated["train"],
            "unk_token_pct": 100 * unk_fraction(self.tokenizer, [ids for ids, _ in train]),
        }


def train_classifier(
    model_dir: str, train_path: str, val_path: str, labels_path: str, out_adapter: str, out_log: str, out_stats: str,
    r: int, lora_alpha: float, target_modules, method: str = "lora", lora_dropout: float = 0.05,
    learning_rate: float = 1e-3, weight_decay: float = 0.0, epochs: float = 1, max_steps: int = 0, batch_size: int = 8,
    grad_accum: int = 1, warmup_steps: int = 0, lr_scheduler: str = "linear", max_grad_norm: float = 1.0,
    eval_every: int = 20, early_stopping_patience: int = 0, max_length: int = 256, eval_batch_size: int = 32,
    precision: str = "fp32", checkpoint_every: int = 0, checkpoint_dir: str | None = None, nproc_per_node: int = 1,
    seed: int = 42, threads: int | None = None, trust_remote_code: bool = False,
) -> dict:
    """Stage entry point: the shared loop (loraflow.train.loop.train) on SequenceClassification; writes the
    adapter (LoRA + head, with the tokenizer), train_log.csv and train_stats.json."""
    args = dict(locals())
    if (stats := relaunch(train_classifier, args)) is not None:
        return stats
    task = SequenceClassification(model_dir, train_path, val_path, labels_path, r, lora_alpha, target_modules, method, lora_dropout,
                                  max_length, eval_batch_size, trust_remote_code)
    return train(task, out_adapter, out_log, out_stats, hparams=run_hparams(args), **{k: args[k] for k in LOOP_KEYS})
