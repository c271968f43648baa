"""The grid check: one model on the meta device, many grid points against it.

Everything runs on the meta device: the model is built from its config without weights, peft wraps
it as training would, and the counts are peft's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from loraflow.model.memory import TrainJob, estimate_memory_mb, weights_file_info
from loraflow.model.targets import resolve_for_model


def meta_model(model_dir_or_config, trust_remote_code: bool = False):
    """The model architecture on the meta device: shapes only, no memory, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    config = model_dir_or_config
    if not isinstance(config, PretrainedConfig):
        config = AutoConfig.from_pretrained(model_dir_or_config, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def check_targets(model, target_modules) -> list[str] | str:
    """The peft targets for a preset or list on this model; TargetModuleError lists its linear layers."""
    return resolve_for_model(model, target_modules)


def lora_counts(
    model, r: int | None, lora_alpha: float | None, target_modules, method: str = "lora"
) -> tuple[int, int]:
    """(trainable, total) parameters exactly as peft counts them (every weight for method full)."""
    import torch
    from peft import get_peft_model

    from loraflow.model.methods import lora_config

    total = sum(p.numel() for p in model.parameters())
    if method == "full":
        return total, total
    config = lora_config(method, r, lora_alpha, target_modules, model=model)  # the config training builds
    with torch.device("meta"):
        peft_model = get_peft_model(model, config)
    return peft_model.get_nb_trainable_parameters()


def merged_model_mb(model) -> dict[str, float]:
    """Disk of a merged model: every weight of the base model once (tied weights once), in fp32 and in bf16."""
    params = sum(p.numel() for p in model.parameters())
    return {"merged_mb_fp32": params * 4 / 2**20, "merged_mb_bf16": params * 2 / 2**20}


def targets_key(targets) -> object:
    """A hashable key for a preset name or list of target modules."""
    return tuple(targets) if isinstance(targets, list) else targets


@dataclass(frozen=True)
class PreflightSettings:
    """What the pre-flight assumes of the train jobs: train.batch_size, tokenize.max_length,
    train.gradient_checkpointing, base_model.trust_remote_code, train.precision, train.packing,
    train.tokens_per_forward, train.attention and train.compile; train.replay (replay rows ride on top of
    each micro-batch, so a train job's batch holds batch_size + replay_rows rows); torch_threads
    (`threads`: the calibration times its steps on as many CPU threads as a train job uses, not on the
    pre-flight job's own share of --cores)."""

    batch_size: int = 8
    max_length: int = 512
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    precision: str = "auto"
    packing: bool = True
    tokens_per_forward: int = 0
    attention: str = "auto"
    compile: bool | str = "auto"
    replay: float = 0.0
    threads: int | None = None

    @property
    def rows_per_batch(self) -> int:
        """Rows of one micro-batch of a train job: the task's batch_size plus its replay rows."""
        from loraflow.train.replay import replay_rows

        return self.batch_size + replay_rows(self.batch_size, self.replay)


class GridCheck:
    """Pre-flight of many grid points against one model, in one process.

    The meta model is built once. Parameter counts of a LoRA-type adapter are affine in its rank
    (r x (in + out) per wrapped layer, plus DoRA's per-row magnitudes), so peft wraps a copy of the model
    at two probe ranks once per (method, targets), and every r is exact from those two; alpha and seed
    do not change counts. tests/test_preflight.py checks the result against a direct peft count."""

    PROBES = (1, 2)

    def __init__(
        self,
        model_dir_or_config,
        settings: PreflightSettings = PreflightSettings(),
        train_rows: int = 0,
        longest: int | None = None,
    ):
        from loraflow.model.batching import forward_tokens, pass_bound
        from loraflow.model.device import pick_device

        s = settings
        self.settings = s
        self.model = meta_model(model_dir_or_config, s.trust_remote_code)
        self.rows = {
            "train_rows": train_rows,
            "longest_train_tokens": longest,
        }  # what the memory estimate assumes of the data
        # the memory estimate's view of the train job (train.precision, train.packing, train.tokens_per_forward), with
        # a forward pass bounded as the train stage bounds it: by the longest train rows (token cache meta), if known
        rows = s.rows_per_batch
        per_forward = forward_tokens(s.tokens_per_forward, s.packing, rows, s.max_length, pick_device())
        self.job = TrainJob(
            rows,
            s.max_length,
            gradient_checkpointing=s.gradient_checkpointing,
            precision=s.precision,
            packing=s.packing,
            tokens_per_forward=pass_bound(per_forward, rows, s.max_length, longest),
            train_rows=train_rows,
            longest=longest,
            attention=s.attention,
            compile=s.compile,
            weights_file=weights_file_info(model_dir_or_config),
        )
        self.merged = merged_model_mb(self.model)
        self._targets: dict = {}
        self._shapes: dict = {}  # (method, targets) -> (model wrapped at a probe rank, trainable(r), total(r))
        self._points: dict = {}  # (method, r, targets) -> (trainable, total, memory estimate)
        self.terms: dict = {}  # (method, r, targets) -> the memory estimate's terms (memory.estimate_memory_mb)

    def targets(self, target_modules):
        key = targets_key(target_modules)
        if key not in self._targets:
            self._targets[key] = check_targets(self.model, target_modules)
        return self._targets[key]

    def _shape(self, method: str, targets):
        import copy

        key = (method, targets_key(targets))
        if key not in self._shapes:
            counts = []
            for r in self.PROBES:
                model = copy.deepcopy(self.model)  # peft wraps in place
                counts.append(lora_counts(model, r, float(r), targets, method))
            (t1, n1), (t2, n2) = counts
            per_t, per_n = t2 - t1, n2 - n1
            self._shapes[key] = (model, lambda r: t1 + (r - 1) * per_t, lambda r: n1 + (r - 1) * per_n)
        return self._shapes[key]

    def counts(self, method: str, r: int | None, targets) -> tuple[int, int, float]:
        """(trainable, total, memory estimate) of a point; the estimate's terms are kept in `terms`."""
        key = (method, r, targets_key(targets))
        if key not in self._points:
            if method == "full":
                model = self.model
                trainable, total = lora_counts(model, r, None, None, method)
            else:
                model, trainable_at, total_at = self._shape(method, targets)
                trainable, total = trainable_at(r), total_at(r)
            # the model as wrapped for this method and targets (at a probe rank; the rank enters via `trainable`)
            self.terms[key] = {}
            estimate = estimate_memory_mb(
                model, trainable, total, dataclasses.replace(self.job, method=method), terms=self.terms[key]
            )
            self._points[key] = trainable, total, estimate
        return self._points[key]

    def point(self, run: str, method: str, r: int | None, lora_alpha: float | None, target_modules) -> dict:
        full = method == "full"
        targets = None if full else self.targets(target_modules)
        trainable, total, estimate = self.counts(method, r, targets)
        return {
            "run": run,
            "method": method,
            "r": r,
            "lora_alpha": lora_alpha,
            "target_modules": targets,
            "trainable_params": trainable,
            "total_params": total,
            "trainable_pct": 100 * trainable / total,
            "adapter_mb": trainable * 4 / 2**20,
            "est_peak_train_memory_mb": estimate,
            **self.rows,
            # a full fine-tune is saved whole by training (adapter_mb); there is nothing to merge
            **({"merged_mb_fp32": None, "merged_mb_bf16": None} if full else self.merged),
        }
