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
from loraflow.model.targets import TargetModuleError, linear_layer_names, resolve_for_model  # noqa: F401 (re-exported)

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

    from loraflow.model.methods import lora_config

    total = sum(p.numel() for p in model.parameters())
    if method == "full":
        return total, total
    config = lora_config(method, r, lora_alpha, target_modules, model=model)  # the config training builds
    with torch.device("meta"):
        peft_model = get_peft_model(model, config)
    return peft_model.get_nb_trainable_parameters()


# Bytes per weight of the quantised linear layers (NF4 with double-quantised scales, int8 + scales).
WEIGHT_BYTES = {"qlora": 0.53, "lora_8bit": 1.03}


# The memory model below, calibrated by benchmarks/calibrate_memory.py (peak RSS of real train jobs on
# CPU, torch 2.13 / transformers 5.24 / peft 0.21; the script prints the measured points).
PROCESS_MB = 520.0  # python + torch + transformers + peft + tokenizer + token cache, before the weights (CPU RSS)
# Saved activations per token per decoder layer, in bytes: a * hidden + b * intermediate (+ c * kv width),
# per compute precision (bf16 autocast keeps most saved tensors in bf16).
ACTIVATION_BYTES = {"fp32": (40.0, 16.0, 8.0), "bf16": (24.0, 10.0, 4.0)}
# A CUDA GPU keeps fewer bytes per token in bf16: these replace the CPU's there (max allocated). Measured on an
# H200 (torch 2.11+cu130, transformers 5.17, SDPA; scripts/gpu_check.py): the medical side-by-side job (SmolLM2-135M,
# r=8 qv, 4 x 512 tokens a pass) peaked at 1,832 MB against 2,347 estimated with the CPU's coefficients; its
# activations were 0.733 of theirs, hence 0.733 x the CPU's bf16 row. Checked on the default job (r=16, 8 x 130
# tokens): 1,167 MB measured, 1,141 estimated (-2 %; +20 % with the CPU's coefficients). fp32 on a GPU: not measured.
CUDA_ACTIVATION_BYTES = {"bf16": (17.6, 7.33, 2.93)}
# bf16 matmuls on a CPU run through oneDNN, which keeps a compiled kernel per matmul shape (modeling.shape_granule):
# RSS grows over a training run until the shapes are all met. Measured by benchmarks/bench_granule.py on 2 AVX512-BF16
# cores at granule 16, from step 5 to the end: +157 MB on the default data (60 steps), +200 MB on the medical job (40).
KERNEL_CACHE_MB = 180.0
# Eager attention (modeling.attention_implementation) keeps each layer's attention probabilities for the backward
# pass: rows x heads x width^2 elements, in bytes per element: the bf16 probabilities and the fp32 softmax output
# uncompiled, the bf16 probabilities alone when inductor fuses the softmax (compiled layers).
EAGER_SCORE_BYTES = {False: 6.0, True: 2.0}
TRAIN_TERMS = ("process", "weights", "optimizer", "activations", "attention", "loss", "tokens", "kernels")  # summed: the training peak
ALLOCATOR_SLACK = 1.10  # allocator fragmentation on the per-step (dynamic) part


def estimate_memory_mb(model, trainable: int, total: int, batch_size: int, seq_len: int, bytes_per_param: int = 4,
                       method: str = "lora", gradient_checkpointing: bool = False, *, precision: str = "auto",
                       packing: bool = True, tokens_per_forward: int | None = None, train_rows: int = 0,
                       device_type: str | None = None, weights_file: tuple[int, int] = (0, 0), attention: str = "auto",
                       compile="auto", longest: int | None = None, terms: dict | None = None) -> float:
    """Peak training memory (MB) of the train stage: peak RSS on a CPU, max allocated on a GPU.

    Terms (pass a dict as `terms` to get them back, MB): `process` (interpreter and libraries, CPU
    only), `weights` (the frozen base in bf16 under bf16 training, modeling.train_weight_dtype;
    quantised for qlora / lora_8bit), `optimizer` (gradients, AdamW moments and the best-adapter copy of
    the trained parameters), `activations` (saved tensors of one forward pass: tokens per pass x layers
    x a per-token-layer size calibrated per precision, and on a CUDA GPU for bf16 by a measurement
    there; layer inputs plus one layer under gradient checkpointing), `attention` (eager attention's
    saved probabilities, train.attention: layers x heads x tokens per pass x row width,
    EAGER_SCORE_BYTES each; one layer's under checkpointing), `loss` (one chunk of full-vocabulary
    logits and the hidden-state gradient of the chunked loss, modeling.head_nll), `tokens` (the token
    cache), `kernels` (oneDNN's kernel cache, bf16 on a CPU: KERNEL_CACHE_MB), and allocator slack on
    the per-step part. Tokens per pass follow the train stage (modeling.forward_tokens): `seq_len` packed
    tokens on a CPU with packing, else `batch_size` x `seq_len` (the worst case of a padded batch).

    On a CPU the peak can also come while the base model loads. `weights_file` is (bytes, bytes per
    weight) of the safetensors files (weights_file_info). Loaded in the dtype they are stored in, the
    weights stay the file's pages (no copy); converted (fp32 files into a bf16 base), the pages read are
    resident next to the converted weights. So the estimate is the larger of that `load` peak (process
    + converted files + weights) and the training sum; `terms` then also holds `load_peak` and
    `peak_phase` ("load" or "train"). Measured on the 0.5B shape: fp32 files into bf16 peak at 3,208 MB
    while loading, 1,325 MB after; bf16 files into bf16 392 MB (pages not yet touched)."""
    import torch

    from loraflow.model.modeling import (
        _loss_chunk, attention_implementation, compile_training, forward_tokens, pick_device, train_weight_dtype, training_precision,
    )

    device = torch.device(device_type) if device_type else pick_device()
    precision = training_precision(precision, device)
    base_bytes = train_weight_dtype(precision, method).itemsize  # the frozen base as the train stage loads it
    cfg = model.config
    hidden = getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0)
    layers = getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0)
    inter = getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden
    heads = getattr(cfg, "num_attention_heads", 0) or 1
    kv_width = (getattr(cfg, "num_key_value_heads", None) or heads) * (getattr(cfg, "head_dim", None) or hidden // heads)
    vocab = getattr(cfg, "vocab_size", 0)
    per_pass = tokens_per_forward if tokens_per_forward is not None else forward_tokens(0, packing, batch_size, seq_len, device)
    tokens = per_pass or batch_size * seq_len

    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    weights = total * bytes_per_param
    checkpointed = gradient_checkpointing or method in WEIGHT_BYTES
    if method in WEIGHT_BYTES:  # the decoder's linear layers are stored quantised
        weights -= linear * (bytes_per_param - WEIGHT_BYTES[method])
    elif base_bytes < bytes_per_param:  # frozen base loaded in bf16, adapter fp32
        weights -= (total - trainable) * (bytes_per_param - base_bytes)
    state_bytes = 2 if method in WEIGHT_BYTES else 8  # AdamW moments: two 1-byte (paged AdamW 8-bit) or two fp32
    optimizer = trainable * (4 + state_bytes + 4)  # gradient + moments + the best-adapter copy
    compute = "bf16" if precision == "bf16" else "fp32"
    a, b, c = (CUDA_ACTIVATION_BYTES.get(compute) if device.type == "cuda" else None) or ACTIVATION_BYTES[compute]
    per_token_layer = a * hidden + b * inter + c * kv_width
    if checkpointed:  # each layer's input kept, one layer's activations alive while it is recomputed
        activations = tokens * (layers * hidden * 4 + per_token_layer)
    else:
        activations = tokens * layers * per_token_layer
    eager = attention_implementation(attention, device, precision, seq_len) == "eager"
    compiled = compile_training(compile, device, precision, method, checkpointed)
    # rows no wider than seq_len nor the longest train row: a pass of `tokens` holds at most tokens x width scores per head
    width = min(seq_len, longest or seq_len, tokens)
    scores = heads * tokens * width * EAGER_SCORE_BYTES[compiled] if eager else 0
    attention_saved = scores * (1 if checkpointed else layers)
    chunk = _loss_chunk(vocab)
    loss = min(chunk, tokens) * vocab * 4 * 2 + tokens * hidden * 4 * 2
    token_cache = train_rows * seq_len * 5  # int32 ids + uint8 mask (upper bound: rows x max length)
    process = PROCESS_MB * 2**20 if device.type == "cpu" else 0
    kernels = KERNEL_CACHE_MB * 2**20 if device.type == "cpu" and compute == "bf16" else 0
    parts = {"process": process, "weights": weights, "optimizer": optimizer, "activations": activations * ALLOCATOR_SLACK,
             "attention": attention_saved * ALLOCATOR_SLACK, "loss": loss * ALLOCATOR_SLACK, "tokens": token_cache, "kernels": kernels}
    train_peak = sum(parts.values())  # the TRAIN_TERMS
    file_bytes, file_weight_bytes = weights_file
    converted = file_bytes if method in WEIGHT_BYTES or file_weight_bytes != base_bytes else 0  # quantising converts too
    load_peak = process + converted + weights if device.type == "cpu" else 0
    if terms is not None:
        terms.update({k: v / 2**20 for k, v in parts.items()})
        terms.update(load_peak=load_peak / 2**20, peak_phase="load" if load_peak > train_peak else "train")
    return max(train_peak, load_peak) / 2**20


SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def weights_file_info(model_dir) -> tuple[int, int]:
    """(bytes, bytes per weight of most of them) of a model directory's safetensors files, read from their
    headers; (0, 0) for a config or a hub id."""
    import json
    import struct

    d = Path(str(model_dir))
    total, by_size = 0, {}
    for f in sorted(d.glob("*.safetensors")) if d.is_dir() else []:
        total += f.stat().st_size
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, t in header.items():
            if name != "__metadata__":
                start, end = t["data_offsets"]
                size = SAFETENSORS_BYTES.get(t["dtype"], 0)
                by_size[size] = by_size.get(size, 0) + end - start
    return total, max(by_size, key=by_size.get) if by_size else 0


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
                 trust_remote_code: bool = False, precision: str = "auto", packing: bool = True, tokens_per_forward: int = 0,
                 train_rows: int = 0, longest: int | None = None, attention: str = "auto", compile="auto"):
        from loraflow.model.modeling import forward_tokens, pass_bound, pick_device

        self.model = meta_model(model_dir_or_config, trust_remote_code)
        self.batch_size, self.max_length, self.gradient_checkpointing = batch_size, max_length, gradient_checkpointing
        self.rows = {"train_rows": train_rows, "longest_train_tokens": longest}  # what the memory estimate assumes of the data
        # the memory estimate's view of the train job (train.precision, train.packing, train.tokens_per_forward), with
        # a forward pass bounded as the train stage bounds it: by the longest train rows (token cache meta), if known
        per_forward = forward_tokens(tokens_per_forward, packing, batch_size, max_length, pick_device())
        self.memory_settings = {"precision": precision, "train_rows": train_rows, "attention": attention, "compile": compile,
                                "longest": longest,
                                "tokens_per_forward": pass_bound(per_forward, batch_size, max_length, longest),
                                "weights_file": weights_file_info(model_dir_or_config)}
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
                                          gradient_checkpointing=self.gradient_checkpointing, **self.memory_settings)
            self._points[key] = trainable, total, estimate
        return self._points[key]

    def point(self, run: str, method: str, r: int | None, lora_alpha: float | None, target_modules) -> dict:
        full = method == "full"
        targets = None if full else self.targets(target_modules)
        trainable, total, estimate = self.counts(method, r, targets)
        return {
            "run": run, "method": method, "r": r, "lora_alpha": lora_alpha, "target_modules": targets,
            "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
            "adapter_mb": trainable * 4 / 2**20, "est_peak_train_memory_mb": estimate, **self.rows,
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
    checked_with: dict | None = None, out_csv: str | None = None, precision: str = "auto", packing: bool = True,
    tokens_per_forward: int = 0, tokens_meta: str | None = None, attention: str = "auto", compile="auto",
) -> pd.DataFrame:
    """Pre-flight stage entry point: grid points ({run: {method, r, lora_alpha, target_modules}}) in one
    process; writes runs/<run>/preflight.json per point (matched by run name; `checked_with` recorded
    in each, see workflow/rules/preflight.smk) and, if asked, a csv of them.

    With `tokens_meta` (the token cache's meta.json) the memory estimate counts the train rows there are
    and bounds a forward pass by the longest of them, as the train stage does; each point records them
    (`train_rows`, `longest_train_tokens`). Without it, rows of max_length (the worst case).

    Every point is checked before anything is written; any bad point (a target module that does not
    exist, a layer LoRA cannot wrap) fails the stage with one message listing all of them."""
    from loraflow.config import ConfigError

    paths = {run_of(p): p for p in out_jsons}
    if set(paths) != set(runs):
        raise ValueError(f"pre-flight outputs {sorted(paths)} do not match the grid's runs {sorted(runs)}")
    train = read_json(tokens_meta)["splits"]["train"] if tokens_meta else {}
    check = GridCheck(model_dir, batch_size, max_length, gradient_checkpointing, trust_remote_code, precision, packing, tokens_per_forward,
                      train.get("examples", 0), train.get("longest"), attention, compile)
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
