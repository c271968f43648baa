"""The training loop knows tasks only through loraflow.tasks.base.Task: a third task is one class.

Here a bag-of-words classifier in plain torch (no transformers, no peft) implements the interface and
trains through the same loop as the causal LM and the classifier: exact epochs, validation columns,
the best step kept, the artefact and train_stats.json written."""

from __future__ import annotations

import random

import pandas as pd
import torch
import torch.nn.functional as F

from loraflow.io import read_json
from loraflow.train.loop import fit, train
from loraflow.train.settings import LoopRuntime, LoopSettings, RunOutputs, TrainSettings


class BagOfWords:
    """Token ids -> label: is token 1 more frequent than token 2? (mean-pooled embeddings + linear head)."""

    method = "lora"  # plain AdamW
    eval_fields = ["val_accuracy"]
    fingerprint_files: list[str] = []

    def __init__(self, n: int = 120, seed: int = 0):
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            ids = [rng.choice([1, 2, 3, 4]) for _ in range(rng.randint(3, 12))]
            rows.append((ids, int(ids.count(1) > ids.count(2))))
        self.splits = {"train": rows[: n * 3 // 4], "val": rows[n * 3 // 4 :]}

    def examples(self, split):
        return self.splits[split]

    def length(self, example):
        return len(example[0])

    def build(self, device, precision):
        self.device = device
        return torch.nn.ModuleDict({"emb": torch.nn.EmbeddingBag(5, 8, mode="mean"), "head": torch.nn.Linear(8, 2)}).to(
            device
        )

    def targets(self, examples):
        return len(examples)

    def forwards(self, examples):
        flat = torch.tensor([t for ids, _ in examples for t in ids], device=self.device)
        offsets = torch.tensor(
            [0, *torch.tensor([len(ids) for ids, _ in examples]).cumsum(0)[:-1].tolist()], device=self.device
        )
        return [(flat, offsets, torch.tensor([y for _, y in examples], device=self.device))]

    def loss_sum(self, model, batch):
        flat, offsets, y = batch
        return F.cross_entropy(model["head"](model["emb"](flat, offsets)).float(), y, reduction="sum")

    @torch.no_grad()
    def validate(self, model):
        flat, offsets, y = self.forwards(self.splits["val"])[0]
        pred = model["head"](model["emb"](flat, offsets)).argmax(-1)
        return {"val_accuracy": round(100 * (pred == y).float().mean().item(), 3)}

    def rank(self, metrics):
        return (metrics["val_accuracy"],)

    def save(self, model, out_dir):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out_dir}/model.safetensors")
        return {"saved": "model.safetensors"}

    def stats(self, state):
        return {"task": "bag_of_words", "best_val_accuracy": (state["best"] or {}).get("val_accuracy")}


def test_a_third_task_trains_through_the_shared_loop(tmp_path):
    task = BagOfWords()
    loop = LoopSettings(
        TrainSettings(epochs=3, batch_size=8, grad_accum=2, eval_every=3),
        LoopRuntime(threads=1),
        learning_rate=0.05,
        seed=1,
    )
    stats = train(
        task, RunOutputs(str(tmp_path / "model"), str(tmp_path / "log.csv"), str(tmp_path / "stats.json")), loop
    )
    assert stats["epochs_seen"] == 3 and stats["tokens_seen"] == 3 * sum(len(ids) for ids, _ in task.examples("train"))
    assert stats["steps"] == 3 * 6  # 12 micro-batches an epoch, 2 a step, no step across two epochs
    assert (
        stats["best_val_accuracy"] >= 80 and stats["task"] == "bag_of_words" and stats["saved"] == "model.safetensors"
    )
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log.columns) == ["step", "epoch", "train_loss", "val_accuracy", "lr", "tokens_seen", "elapsed_s"]
    assert log["val_accuracy"].max() == stats["best_val_accuracy"] and read_json(tmp_path / "stats.json") == stats
    kept = log.loc[log["val_accuracy"].idxmax(), "step"]
    assert stats["best_step"] == kept  # the first step with the best validation result is the one kept
    again = fit(BagOfWords(), loop)
    assert again.state["rows"][-1]["train_loss"] == log["train_loss"].iloc[-1]  # seeded: the same run again
