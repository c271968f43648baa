"""Task causal_lm: supervised fine-tuning of a causal LM on chats, the loss on assistant tokens only.

Examples are the tokenised conversations of the token cache (data.tokenization.load_split: token ids
and the assistant mask). A micro-batch is packed into rows of up to `tokenize.max_length` tokens
(`train.packing`; position ids restart per conversation, so attention stays within each conversation)
and run as forward passes of at most `train.tokens_per_forward` tokens (modeling.forward_batches); the
loss applies the LM head only at assistant positions, in chunks (modeling.supervised_loss). Validation:
the token-weighted mean loss on the validation split (lower wins). How the base is loaded and what is
trained depends on the method (LoRA, DoRA, rsLoRA, QLoRA, 8-bit, full; model/methods.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from loraflow.data.tokenization import load_split
from loraflow.io import read_json
from loraflow.model.methods import QUANTIZED, load_base, save_trained, trainable_model
from loraflow.model.modeling import (
    attention_implementation, compile_training, forward_batches, forward_tokens, load_tokenizer, mean_loss, pass_bound, shape_granule,
    supervised_loss, train_weight_dtype, unwrap,
)

log = logging.getLogger(__name__)


def plan_memory(model, method: str, trainable: int, total: int, batch_size: int, max_length: int, per_forward: int,
                precision: str, checkpointing: bool, max_memory_mb: int, n_train: int, weights_file: tuple[int, int] = (0, 0),
                attention: str = "sdpa", compile="auto", longest: int | None = None) -> dict:
    """The memory estimate (preflight.estimate_memory_mb) for these settings; with `max_memory_mb` set
    and exceeded, gradient checkpointing is switched on (and the estimate redone). Also whether the
    decoder layers are compiled (modeling.compile_training: `auto` does not compile under checkpointing)."""
    from loraflow.train.preflight import estimate_memory_mb

    device = next(model.parameters()).device

    def estimate(gc: bool) -> float:
        return estimate_memory_mb(model, trainable, total, batch_size, max_length, method=method, gradient_checkpointing=gc,
                                  precision=precision, tokens_per_forward=per_forward, train_rows=n_train,
                                  weights_file=weights_file, attention=attention, compile=compile, longest=longest,
                                  device_type=device.type)

    est = estimate(checkpointing)
    if max_memory_mb and est > max_memory_mb and not checkpointing:
        log.info("estimated peak %.0f MB > train.max_memory_mb %d: gradient checkpointing on", est, max_memory_mb)
        checkpointing, est = True, estimate(True)
        if est > max_memory_mb:
            log.warning("estimated peak %.0f MB still above train.max_memory_mb %d with gradient checkpointing", est, max_memory_mb)
    return {"estimate_mb": est, "gradient_checkpointing": checkpointing,
            "compiled": compile_training(compile, device, precision, method, checkpointing)}


def enable_checkpointing(model) -> None:
    """Gradient checkpointing on an already wrapped (peft) model: every decoder layer recomputes its
    activations in the backward pass."""
    unwrap(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def compile_layers(model, fall_back: bool = False) -> None:
    """torch.compile every decoder layer (one compiled graph shared by all layers, dynamic shapes). With
    `fall_back` (train.compile: auto) a layer that fails to compile runs uncompiled, with a warning."""
    if fall_back:
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
    lm = unwrap(model)
    layers = getattr(getattr(lm, lm.base_model_prefix), "layers", None)
    if layers is None:
        log.warning("train.compile: no decoder layers found on %s; not compiling", type(lm).__name__)
        return
    for layer in layers:
        layer.compile(dynamic=True)


@dataclass
class CausalLM:
    """The causal-LM task (loraflow.tasks.base.Task) for one grid point."""

    model_dir: str
    train_path: str
    val_path: str
    tokens_meta: str
    method: str
    r: int | None
    lora_alpha: float | None
    target_modules: object
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False
    batch_size: int = 8
    max_eval_batches: int = 0
    packing: bool = True
    tokens_per_forward: int = 0
    compile: bool | str = "auto"
    max_memory_mb: int = 0
    trust_remote_code: bool = False
    preflight: str | None = None
    attention: str = "auto"
    replay_share: float = 0.0  # train.replay: share of each micro-batch taken by general rows (train/replay.py)
    replay_tokens: str | None = None  # the replay data's token cache and its meta (data/replay.py)
    replay_meta: str | None = None

    eval_fields = ["eval_loss"]

    def __post_init__(self):
        self.fingerprint_files = [self.tokens_meta, *([self.replay_meta] if self.replay_share else [])]
        self.tokenizer = load_tokenizer(self.model_dir)
        self.max_length = int(read_json(self.tokens_meta).get("max_length") or 512)
        self.splits: dict[str, list] = {}
        self.replay = None
        if self.replay_share:
            from loraflow.train.replay import ReplayMix

            if not (self.replay_tokens and self.replay_meta):
                raise ValueError("train.replay > 0 needs the replay data (replay_tokens, replay_meta)")
            self.replay = ReplayMix(load_split(self.replay_tokens, self.replay_meta, self.model_dir), self.replay_share)

    def examples(self, split: str) -> list:
        if split not in self.splits:
            self.splits[split] = load_split({"train": self.train_path, "val": self.val_path}[split], self.tokens_meta, self.model_dir)
        return self.splits[split]

    def length(self, example) -> int:
        return len(example[0])

    def build(self, device: torch.device, precision: str):
        from loraflow.train.loop import parameter_counts
        from loraflow.train.preflight import weights_file_info

        self.device, self.precision = device, precision
        n_train = len(self.examples("train"))
        base = load_base(self.model_dir, device, self.method, self.trust_remote_code, dtype=train_weight_dtype(precision, self.method))
        model = trainable_model(base, self.method, self.r, self.lora_alpha, self.target_modules, self.lora_dropout, self.gradient_checkpointing)
        trainable, total = parameter_counts(model)
        rows = self.batch_size + (self.replay.rows_for(self.batch_size) if self.replay else 0)  # a micro-batch's rows, replay included
        self.per_forward = forward_tokens(self.tokens_per_forward, self.packing, rows, self.max_length, device)
        asked = self.gradient_checkpointing or self.method in QUANTIZED
        # the most tokens one forward pass can hold with these rows (the pre-flight bounds it the same way, by the token cache's meta)
        longest = max((self.length(e) for e in [*self.examples("train"), *(self.replay.examples if self.replay else [])]),
                      default=self.max_length)
        most = pass_bound(self.per_forward, rows, self.max_length, longest)
        self.attn = attention_implementation(self.attention, device, precision, self.max_length)
        if self.attn != unwrap(model).config._attn_implementation:
            unwrap(model).set_attn_implementation(self.attn)
        self.memory = plan_memory(model, self.method, trainable, total, rows, self.max_length, most, precision,
                                  asked, self.max_memory_mb, n_train, weights_file_info(self.model_dir), self.attn, self.compile, longest)
        if self.memory["gradient_checkpointing"] and not asked:
            enable_checkpointing(model)
        if self.memory["compiled"]:
            compile_layers(model, fall_back=self.compile == "auto")
        log.info("%s r=%s alpha=%s targets=%s: %s trainable of %s parameters (%.4f%%) on %s, %s compute, %s attention%s, %s, %s "
                 "tokens per forward pass, estimated peak %.0f MB%s", self.method, self.r, self.lora_alpha, self.target_modules,
                 f"{trainable:,}", f"{total:,}", 100 * trainable / total, device, precision, self.attn,
                 ", compiled layers" if self.memory["compiled"] else "", "packed rows" if self.packing else "padded rows",
                 self.per_forward or "all", self.memory["estimate_mb"], ", gradient checkpointing" if self.memory["gradient_checkpointing"] else "")
        return model

    def targets(self, examples: list) -> int:
        return sum(int(mask[1:].sum()) for _, mask in examples)

    def forwards(self, examples: list):
        return forward_batches(examples, self.tokenizer.pad_token_id, self.device, self.packing, self.max_length, self.per_forward,
                               shape_granule(self.device, self.precision))

    def loss_sum(self, model, batch) -> torch.Tensor:
        return supervised_loss(model, batch)[0]

    def validate(self, model) -> dict[str, float]:
        loss = mean_loss(model, self.examples("val"), self.batch_size * 2, self.tokenizer.pad_token_id, self.device, self.max_eval_batches,
                         self.precision, forwards=self.forwards)
        return {"eval_loss": round(loss, 5)}

    def rank(self, metrics: dict[str, float]) -> tuple:
        return (-metrics["eval_loss"],)

    def save(self, model, out_dir: str) -> dict:
        save_trained(model, self.method, out_dir)
        return {}

    def stats(self, state: dict) -> dict:
        stats = {
            "method": self.method, "r": self.r, "lora_alpha": self.lora_alpha, "target_modules": self.target_modules,
            "best_eval_loss": (state["best"] or {}).get("eval_loss", math.inf), "supervised_tokens_seen": state["supervised_seen"],
            "quantization": {"qlora": "nf4 (double quant, bf16 compute)", "lora_8bit": "int8"}.get(self.method, "none"),
            "gradient_checkpointing": self.memory["gradient_checkpointing"], "packing": self.packing,
            "tokens_per_forward": self.per_forward, "attention": self.attn, "compiled": self.memory["compiled"],
            "est_memory_mb": self.memory["estimate_mb"], "replay": self.replay_share,
        }
        if self.preflight:  # the pre-flight estimate next to the measurement, to keep the estimate honest
            stats["preflight_est_memory_mb"] = read_json(self.preflight)["est_peak_train_memory_mb"]
        return stats
