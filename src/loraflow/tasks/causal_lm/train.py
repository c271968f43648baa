"""Train stage of task causal_lm: supervised fine-tuning of a causal LM on chats, the loss on assistant
tokens only, through the shared training loop (loraflow.train.loop), as tasks/seq_cls/train.py for classification.

Examples are the tokenised conversations of the token cache (data.tokenization.load_split: token ids
and the assistant mask). A micro-batch is packed into rows of up to `tokenize.max_length` tokens
(`train.packing`; position ids restart per conversation, so attention stays within each conversation)
and run as forward passes of at most `train.tokens_per_forward` tokens (model.batching.forward_batches); the
loss applies the LM head only at assistant positions, in chunks (model.loss.supervised_loss). Validation:
the token-weighted mean loss on the validation split (lower wins). How the base is loaded and what is
trained depends on the method (LoRA, DoRA, rsLoRA, QLoRA, 8-bit, full; model/methods.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from loraflow.data.tokenization import load_split
from loraflow.io import read_json
from loraflow.model.batching import forward_batches, forward_tokens, pass_bound
from loraflow.model.counts import parameter_counts
from loraflow.model.device import train_weight_dtype
from loraflow.model.kernels import attention_implementation, shape_granule
from loraflow.model.loading import load_tokenizer, unwrap
from loraflow.model.loss import mean_loss, supervised_loss
from loraflow.model.memory import TrainJob, plan_memory, weights_file_info
from loraflow.model.methods import QUANTIZED, load_base, save_trained, trainable_model
from loraflow.tasks.causal_lm.model import compile_layers, enable_checkpointing
from loraflow.tasks.causal_lm.settings import LearningRate, LMInputs, LMRuntime, LMTrainSettings, ReplaySettings
from loraflow.train.loop import relaunch, run_hparams
from loraflow.train.loop import train as train_task
from loraflow.train.settings import GridPoint, LoopSettings, RunOutputs, flat

log = logging.getLogger(__name__)


@dataclass
class CausalLM:
    """The causal-LM task (loraflow.tasks.base.Task) for one grid point."""

    inputs: LMInputs
    point: GridPoint
    train: LMTrainSettings
    replay_settings: ReplaySettings = field(default_factory=ReplaySettings)
    runtime: LMRuntime = field(default_factory=LMRuntime)

    eval_fields = ["eval_loss"]

    def __post_init__(self) -> None:
        files, share = self.inputs, self.replay_settings.replay
        meta = self.replay_settings.replay_meta  # required with a share: checked below
        self.fingerprint_files = [files.tokens_meta, *([meta] if share and meta else [])]
        self.tokenizer = load_tokenizer(files.model_dir)
        self.max_length = int(read_json(files.tokens_meta).get("max_length") or 512)
        self.splits: dict[str, list] = {}
        self.replay = None  # the loop mixes its rows into every micro-batch (train.replay)
        if share:
            from loraflow.train.replay import ReplayMix

            data = self.replay_settings
            if not (data.replay_tokens and data.replay_meta):
                raise ValueError("train.replay > 0 needs the replay data (replay_tokens, replay_meta)")
            self.replay = ReplayMix(load_split(data.replay_tokens, data.replay_meta, files.model_dir), share)

    @property
    def method(self) -> str:
        return self.point.method

    def examples(self, split: str) -> list:
        if split not in self.splits:
            self.splits[split] = load_split(
                {"train": self.inputs.train_path, "val": self.inputs.val_path}[split],
                self.inputs.tokens_meta,
                self.inputs.model_dir,
            )
        return self.splits[split]

    def length(self, example) -> int:
        return len(example[0])

    def build(self, device: torch.device, precision: str):
        self.device, self.precision = device, precision
        point, train, files = self.point, self.train, self.inputs
        n_train = len(self.examples("train"))
        base = load_base(
            files.model_dir,
            device,
            self.method,
            files.trust_remote_code,
            dtype=train_weight_dtype(precision, self.method),
        )
        model = trainable_model(
            base,
            self.method,
            point.r,
            point.lora_alpha,
            point.target_modules,
            train.lora_dropout,
            self.runtime.gradient_checkpointing,
        )
        trainable, total = parameter_counts(model)
        rows = train.batch_size + (
            self.replay.rows_for(train.batch_size) if self.replay else 0
        )  # a micro-batch's rows, replay included
        self.per_forward = forward_tokens(train.tokens_per_forward, train.packing, rows, self.max_length, device)
        asked = self.runtime.gradient_checkpointing or self.method in QUANTIZED
        # the most tokens one forward pass can hold with these rows (the pre-flight bounds it the same way, by the
        # token cache's meta)
        longest = max(
            (self.length(e) for e in [*self.examples("train"), *(self.replay.examples if self.replay else [])]),
            default=self.max_length,
        )
        most = pass_bound(self.per_forward, rows, self.max_length, longest)
        self.attn = attention_implementation(train.attention, device, precision, self.max_length)
        if self.attn != unwrap(model).config._attn_implementation:
            unwrap(model).set_attn_implementation(self.attn)
        job = TrainJob(
            rows,
            self.max_length,
            self.method,
            asked,
            precision,
            tokens_per_forward=most,
            train_rows=n_train,
            longest=longest,
            attention=self.attn,
            compile=train.compile,
            weights_file=weights_file_info(files.model_dir),
        )
        self.memory = plan_memory(model, trainable, total, job, self.runtime.max_memory_mb)
        if self.memory["gradient_checkpointing"] and not asked:
            enable_checkpointing(model)
        if self.memory["compiled"]:
            compile_layers(model, fall_back=train.compile == "auto")
        log.info(
            "%s r=%s alpha=%s targets=%s: %s trainable of %s parameters (%.4f%%) on %s, %s compute, %s attention%s, "
            "%s, %s tokens per forward pass, estimated peak %.0f MB%s",
            self.method,
            point.r,
            point.lora_alpha,
            point.target_modules,
            f"{trainable:,}",
            f"{total:,}",
            100 * trainable / total,
            device,
            precision,
            self.attn,
            ", compiled layers" if self.memory["compiled"] else "",
            "packed rows" if train.packing else "padded rows",
            self.per_forward or "all",
            self.memory["estimate_mb"],
            ", gradient checkpointing" if self.memory["gradient_checkpointing"] else "",
        )
        return model

    def targets(self, examples: list) -> int:
        return sum(int(mask[1:].sum()) for _, mask in examples)

    def forwards(self, examples: list):
        return forward_batches(
            examples,
            self.tokenizer.pad_token_id,
            self.device,
            self.train.packing,
            self.max_length,
            self.per_forward,
            shape_granule(self.device, self.precision),
        )

    def loss_sum(self, model, batch) -> torch.Tensor:
        return supervised_loss(model, batch)[0]

    def validate(self, model) -> dict[str, float]:
        loss = mean_loss(
            model,
            self.examples("val"),
            self.train.batch_size * 2,
            self.tokenizer.pad_token_id,
            self.device,
            self.train.max_eval_batches,
            self.precision,
            forwards=self.forwards,
        )
        return {"eval_loss": round(loss, 5)}

    def rank(self, metrics: dict[str, float]) -> tuple:
        return (-metrics["eval_loss"],)

    def save(self, model, out_dir: str) -> dict:
        save_trained(model, self.method, out_dir)
        return {}

    def stats(self, state: dict) -> dict:
        stats = {
            "method": self.method,
            "r": self.point.r,
            "lora_alpha": self.point.lora_alpha,
            "target_modules": self.point.target_modules,
            "best_eval_loss": (state["best"] or {}).get("eval_loss", math.inf),
            "supervised_tokens_seen": state["supervised_seen"],
            "quantization": {"qlora": "nf4 (double quant, bf16 compute)", "lora_8bit": "int8"}.get(self.method, "none"),
            "gradient_checkpointing": self.memory["gradient_checkpointing"],
            "packing": self.train.packing,
            "tokens_per_forward": self.per_forward,
            "attention": self.attn,
            "compiled": self.memory["compiled"],
            "est_memory_mb": self.memory["estimate_mb"],
            "replay": self.replay_settings.replay,
        }
        if self.inputs.preflight:  # the pre-flight estimate next to the measurement, to keep the estimate honest
            stats["preflight_est_memory_mb"] = read_json(self.inputs.preflight)["est_peak_train_memory_mb"]
        return stats


def lora_run(
    inputs: LMInputs,
    point: GridPoint,
    train: LMTrainSettings,
    rate: LearningRate = LearningRate(),
    replay_mix: ReplaySettings = ReplaySettings(),
    runtime: LMRuntime = LMRuntime(),
) -> tuple[CausalLM, LoopSettings, dict]:
    """One causal-LM run: its task, the loop's settings (the learning rate its method uses) and the settings
    a checkpoint of it must match. The train stage trains it whole; successive halving in pieces."""
    task = CausalLM(inputs=inputs, point=point, train=train, replay_settings=replay_mix, runtime=runtime)
    loop = LoopSettings(train=train, runtime=runtime, learning_rate=rate.of(point.method), seed=point.seed)
    hparams = run_hparams(inputs, point, train, rate, replay_mix, runtime)
    hparams.pop("preflight")  # a check's report, not a setting
    return task, loop, hparams


def train_lora(
    inputs: LMInputs,
    out: RunOutputs,
    point: GridPoint,
    train: LMTrainSettings,
    rate: LearningRate = LearningRate(),
    replay_mix: ReplaySettings = ReplaySettings(),
    runtime: LMRuntime = LMRuntime(),
    resume_from: str | None = None,
) -> dict:
    """Train stage of task causal_lm: the shared loop (loraflow.train.loop) on CausalLM. `resume_from`: a
    checkpoint of this run's first steps to go on from (successive halving's last rung)."""
    settings = flat(inputs, out, point, train, rate, replay_mix, runtime, resume_from=resume_from)
    if (stats := relaunch(train_lora, train.nproc_per_node, settings, out.out_stats)) is not None:
        return stats
    task, loop, hparams = lora_run(inputs, point, train, rate, replay_mix, runtime)
    return train_task(task, out, loop, hparams=hparams, resume_from=resume_from or None)
