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
    adapter_head_tensors,
    collate,
    encode,
    head_modules,
    load_classifier,
    load_tokenizer,
    predict_logits,
    read_labels,
    unk_fraction,
)
from loraflow.tasks.seq_cls.settings import ClassifierInputs, ClassifySettings
from loraflow.train.loop import relaunch, run_hparams
from loraflow.train.loop import train as train_task
from loraflow.train.settings import GridPoint, LoopRuntime, LoopSettings, RunOutputs, TrainSettings, flat

log = logging.getLogger(__name__)


def lora_classifier(
    model, r: int | None, lora_alpha: float | None, target_modules, lora_dropout: float = 0.05, method: str = "lora"
):
    """Wrap a sequence-classification model with LoRA (`method` lora, dora or rslora); the head
    modules are trained in full and saved with the adapter."""
    from peft import get_peft_model

    from loraflow.model.methods import lora_config

    check_method(method)
    heads = head_modules(model)
    config = lora_config(
        method,
        r,
        lora_alpha,
        target_modules,
        lora_dropout,
        task_type="SEQ_CLS",
        modules_to_save=list(heads),
        model=model,
    )  # peft extends modules_to_save in place
    peft_model = get_peft_model(model, config)
    untrained = [
        h
        for h in heads
        if not any(p.requires_grad for n, p in peft_model.named_parameters() if f".{h}.modules_to_save." in n)
    ]
    if untrained:
        raise RuntimeError(
            f"the classification head {untrained} would not be trained; modules_to_save={config.modules_to_save}"
        )
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

    def __init__(
        self,
        inputs: ClassifierInputs,
        point: GridPoint,
        lora_dropout: float = 0.05,
        classify: ClassifySettings = ClassifySettings(),
    ):
        check_method(point.method)
        self.inputs, self.point, self.lora_dropout, self.classify = inputs, point, lora_dropout, classify
        self.method = point.method
        self.paths = {"train": inputs.train_path, "val": inputs.val_path}
        self.fingerprint_files = [inputs.train_path, inputs.val_path, inputs.labels_path]
        self.labels = read_labels(inputs.labels_path)
        self.tokenizer = load_tokenizer(inputs.model_dir)
        self.splits: dict[str, list] = {}
        self.truncated: dict[str, int] = {}

    def examples(self, split: str) -> list[tuple[list[int], int]]:
        """(token ids, label id) per row of the split."""
        if split not in self.splits:
            label2id = {x: i for i, x in enumerate(self.labels)}
            rows = read_jsonl(self.paths[split])
            ids, self.truncated[split] = encode(self.tokenizer, [r["text"] for r in rows], self.classify.max_length)
            self.splits[split] = [(x, label2id[r["label"]]) for x, r in zip(ids, rows)]
        return self.splits[split]

    def length(self, example) -> int:
        return len(example[0])

    def build(self, device: torch.device, precision: str):
        self.device = device
        model = load_classifier(
            self.inputs.model_dir, self.labels, device, self.inputs.trust_remote_code
        )  # head initialised from the seed
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.heads = head_modules(model)
        point = self.point
        model = lora_classifier(model, point.r, point.lora_alpha, point.target_modules, self.lora_dropout, self.method)
        self.resolved_targets = _listed(model.peft_config["default"].target_modules)
        train = self.examples("train")
        log.info(
            "%s r=%s alpha=%s targets=%s head=%s on %s, %s compute; %d train rows (%d truncated to %d tokens)",
            self.method,
            point.r,
            point.lora_alpha,
            point.target_modules,
            self.heads,
            device,
            precision,
            len(train),
            self.truncated["train"],
            self.classify.max_length,
        )
        return model

    def targets(self, examples: list) -> int:
        return len(examples)

    def forwards(self, examples: list):
        return [
            (
                collate(self.tokenizer, [ids for ids, _ in examples], self.device),
                torch.tensor([y for _, y in examples], device=self.device),
            )
        ]

    def loss_sum(self, model, batch) -> torch.Tensor:
        inputs, y = batch
        return F.cross_entropy(model(**inputs).logits.float(), y, reduction="sum")

    def validate(self, model) -> dict[str, float]:
        val = self.examples("val")
        m = evaluate_split(
            model,
            self.tokenizer,
            [ids for ids, _ in val],
            [y for _, y in val],
            self.classify.eval_batch_size,
            self.device,
        )
        return {
            "val_loss": round(m["loss"], 5),
            "val_accuracy": round(m["accuracy"], 3),
            "val_macro_f1": round(m["macro_f1"], 3),
        }

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
            "method": self.method,
            "r": self.point.r,
            "lora_alpha": self.point.lora_alpha,
            "target_modules": self.point.target_modules,
            "resolved_target_modules": self.resolved_targets,
            "head_modules": self.heads,
            "num_labels": len(self.labels),
            "best_val_accuracy": best.get("val_accuracy", -1.0),
            "best_val_macro_f1": best.get("val_macro_f1", 0.0),
            "best_val_loss": best.get("val_loss", math.inf),
            "examples_per_s": state["supervised_seen"] / max(state["elapsed_s"], 1e-9),
            "train_rows": len(train),
            "truncated_rows": self.truncated["train"],
            "unk_token_pct": 100 * unk_fraction(self.tokenizer, [ids for ids, _ in train]),
        }


def train_classifier(
    inputs: ClassifierInputs,
    out: RunOutputs,
    point: GridPoint,
    train: TrainSettings,
    classify: ClassifySettings = ClassifySettings(),
    runtime: LoopRuntime = LoopRuntime(),
    learning_rate: float = 1e-3,
) -> dict:
    """Stage entry point: the shared loop (loraflow.train.loop.train) on SequenceClassification; writes the
    adapter (LoRA + head, with the tokenizer), train_log.csv and train_stats.json."""
    settings = flat(inputs, out, point, train, classify, runtime, learning_rate=learning_rate)
    if (stats := relaunch(train_classifier, train.nproc_per_node, settings, out.out_stats)) is not None:
        return stats
    task = SequenceClassification(inputs=inputs, point=point, lora_dropout=train.lora_dropout, classify=classify)
    loop = LoopSettings(train=train, runtime=runtime, learning_rate=learning_rate, seed=point.seed)
    hparams = run_hparams(inputs, point, train, classify, runtime, learning_rate=learning_rate)
    return train_task(task, out, loop, hparams=hparams)
