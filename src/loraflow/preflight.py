"""Pre-flight: what a grid point will cost, and whether its target modules exist, before training.

Everything runs on the meta device: the model is built from its config without weights, peft wraps
it as training would, and the counts are peft's own. Snakemake schedules these jobs first, so a bad
target module stops the sweep before any training starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from loraflow.io import atomic_path, read_json, write_json
from loraflow.targets import TargetModuleError, linear_layer_names, resolve_for_model  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


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


def lora_counts(model, r: int | None, lora_alpha: float | None, target_modules, method: str = "lora") -> tuple[int, int]:
    """(trainable, total) parameters exactly as peft counts them (every weight for method full)."""
    import torch
    from peft import get_peft_model

    from loraflow.methods import lora_config

    total = sum(p.numel() for p in model.parameters())
    if method == "full":
        return total, total
    config = lora_config(method, r, lora_alpha, target_modules, model=model)  # the config training builds
    with torch.device("meta"):
        peft_model = get_peft_model(model, config)
    return peft_model.get_nb_trainable_parameters()


# Bytes per weight of the quantised linear layers (NF4 with double-quantised scales, int8 + scales).
WEIGHT_BYTES = {"qlora": 0.53, "lora_8bit": 1.03}


def estimate_memory_mb(model, trainable: int, total: int, batch_size: int, seq_len: int, bytes_per_param: int = 4,
                       method: str = "lora", gradient_checkpointing: bool = False) -> float:
    """Rough peak training memory: weights + gradients and AdamW states of the trained parameters
    + activations of one step (one layer's worth plus layer inputs under gradient checkpointing)."""
    import torch

    cfg = model.config
    hidden = getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0)
    layers = getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0)
    inter = getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden
    tokens = batch_size * seq_len
    weights = total * bytes_per_param
    if method in WEIGHT_BYTES:  # the decoder's linear layers are stored quantised
        head = model.get_output_embeddings()
        quantised = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
        weights -= quantised * (bytes_per_param - WEIGHT_BYTES[method])
    state_bytes = 2 if method in WEIGHT_BYTES else 8  # AdamW moments: two 1-byte (paged AdamW 8-bit) or two fp32
    optimizer = trainable * (bytes_per_param + state_bytes)  # gradient + moments
    per_layer = tokens * (10 * hidden + 3 * inter) * bytes_per_param  # saved tensors per layer
    checkpointed = gradient_checkpointing or method in WEIGHT_BYTES
    activations = (tokens * hidden * bytes_per_param * layers + per_layer) if checkpointed else per_layer * layers
    logits = tokens * getattr(cfg, "vocab_size", 0) * 4 / 2  # logits on supervised positions (about half)
    return (weights + optimizer + activations + logits) / 2**20


def merged_model_mb(model) -> dict[str, float]:
    """Disk of a merged model: every weight of the base model once (tied weights once), in fp32 and in bf16."""
    params = sum(p.numel() for p in model.parameters())
    return {"merged_mb_fp32": params * 4 / 2**20, "merged_mb_bf16": params * 2 / 2**20}


def _key(targets):
    return tuple(targets) if isinstance(targets, list) else targets


class GridCheck:
    """Pre-flight of many grid points against one model, in one process.

    The meta model is built once. Parameter counts of a LoRA-type adapter are affine in its rank
    (r x (in + out) per wrapped layer, plus DoRA's per-row magnitudes), so peft wraps a copy of the model
    at two probe ranks once per (method, targets), and every r is exact from those two; alpha and seed
    do not change counts. tests/test_preflight.py checks the result against a direct peft count."""

    PROBES = (1, 2)

    def __init__(self, model_dir_or_config, batch_size: int, max_length: int, gradient_checkpointing: bool = False,
                 trust_remote_code: bool = False):
        self.model = meta_model(model_dir_or_config, trust_remote_code)
        self.batch_size, self.max_length, self.gradient_checkpointing = batch_size, max_length, gradient_checkpointing
        self.merged = merged_model_mb(self.model)
        self._targets: dict = {}
        self._shapes: dict = {}  # (method, targets) -> (model wrapped at a probe rank, trainable(r), total(r))
        self._points: dict = {}  # (method, r, targets) -> (trainable, total, memory estimate)

    def targets(self, target_modules):
        key = _key(target_modules)
        if key not in self._targets:
            self._targets[key] = check_targets(self.model, target_modules)
        return self._targets[key]

    def _shape(self, method: str, targets):
        import copy

        key = (method, _key(targets))
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
        key = (method, r, _key(targets))
        if key not in self._points:
            if method == "full":
                model = self.model
                trainable, total = lora_counts(model, r, None, None, method)
            else:
                model, trainable_at, total_at = self._shape(method, targets)
                trainable, total = trainable_at(r), total_at(r)
            # the model as wrapped for this method and targets (at a probe rank; the rank enters via `trainable`)
            estimate = estimate_memory_mb(model, trainable, total, self.batch_size, self.max_length, method=method,
                                          gradient_checkpointing=self.gradient_checkpointing)
            self._points[key] = trainable, total, estimate
        return self._points[key]

    def point(self, run: str, method: str, r: int | None, lora_alpha: float | None, target_modules) -> dict:
        full = method == "full"
        targets = None if full else self.targets(target_modules)
        trainable, total, estimate = self.counts(method, r, targets)
        return {
            "run": run, "method": method, "r": r, "lora_alpha": lora_alpha, "target_modules": targets,
            "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
            "adapter_mb": trainable * 4 / 2**20, "est_peak_train_memory_mb": estimate,
            # a full fine-tune is saved whole by training (adapter_mb); there is nothing to merge
            **({"merged_mb_fp32": None, "merged_mb_bf16": None} if full else self.merged),
        }


def preflight_run(
    model_dir: str, out_json: str, run: str, r: int | None, lora_alpha: float | None, target_modules, method: str = "lora",
    batch_size: int = 8, max_length: int = 512, gradient_checkpointing: bool = False, trust_remote_code: bool = False,
) -> dict:
    """Pre-flight of one grid point (the workflow checks the whole grid at once: preflight_grid)."""
    info = GridCheck(model_dir, batch_size, max_length, gradient_checkpointing, trust_remote_code).point(run, method, r, lora_alpha, target_modules)
    write_json(out_json, info)
    return info


def run_of(path: str) -> str:
    """The run a per-run file belongs to: results/runs/<run>/<file>."""
    return Path(path).parent.name


def preflight_grid(
    model_dir: str, out_jsons: list[str], runs: dict[str, dict], batch_size: int = 8, max_length: int = 512,
    gradient_checkpointing: bool = False, trust_remote_code: bool = False, merge_runs: str = "best",
    checked_with: dict | None = None, out_csv: str | None = None,
) -> pd.DataFrame:
    """Pre-flight stage entry point: grid points ({run: {method, r, lora_alpha, target_modules}}) in one
    process; writes runs/<run>/preflight.json per point (matched by run name; `checked_with` recorded
    in each, see workflow/rules/preflight.smk) and, if asked, a csv of them.

    Every point is checked before anything is written; any bad point (a target module that does not
    exist, a layer LoRA cannot wrap) fails the stage with one message listing all of them."""
    from loraflow.config import ConfigError

    paths = {run_of(p): p for p in out_jsons}
    if set(paths) != set(runs):
        raise ValueError(f"pre-flight outputs {sorted(paths)} do not match the grid's runs {sorted(runs)}")
    check = GridCheck(model_dir, batch_size, max_length, gradient_checkpointing, trust_remote_code)
    rows, bad = [], []
    for run, point in runs.items():
        try:
            rows.append(check.point(run, point["method"], point["r"], point["lora_alpha"], point["target_modules"]))
        except Exception as err:  # noqa: BLE001 (every bad point is reported, then the stage fails)
            bad.append(f"{run}: {err}" if isinstance(err, TargetModuleError) else f"{run}: grid point cannot be built: {type(err).__name__}: {err}")
    if bad:
        for line in bad:
            log.error("%s", line)
        raise ConfigError(f"pre-flight: {len(bad)} of {len(runs)} grid point(s) cannot be trained, so no training starts:\n  "
                          + "\n  ".join(bad))
    for info in rows:
        write_json(paths[info["run"]], {**info, "checked_with": checked_with} if checked_with is not None else info)
    df = pd.DataFrame(rows)
    if out_csv:
        with atomic_path(out_csv) as tmp:
            df.to_csv(tmp, index=False)
    merges = {"best": 1, "all": int((df["method"] != "full").sum()), "none": 0}[merge_runs]
    log.info("%d grid point(s) checked; peft wrapped %d model copies. Each merged model takes %.0f MB (fp32) / %.0f MB (bf16); "
             "merge.runs=%s merges %d run(s)", len(rows), len(check.PROBES) * len(check._shapes), check.merged["merged_mb_fp32"],
             check.merged["merged_mb_bf16"], merge_runs, merges)
    return df


def preflight_table(runs: list[str], out_csv: str) -> pd.DataFrame:
    """preflight.csv: one row per grid point, from runs/<run>/preflight.json."""
    df = pd.DataFrame([{k: v for k, v in read_json(p).items() if k != "checked_with"} for p in runs])
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df
