"""The memory plan of a train job: its peak memory estimated from the model's shape and the job's settings
(estimate_memory_mb), and gradient checkpointing switched on where the estimate exceeds the budget
(plan_memory). The pre-flight estimates every grid point with it; the train stage plans its own job.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """What the memory estimate assumes of a train job.

    `seq_len` is the longest row (tokenize.max_length); `tokens_per_forward` the tokens of one forward pass
    (None: as the train stage picks them, batching.forward_tokens); `train_rows` and `longest` the token
    cache's train rows and its longest (0 / None: unknown, rows of `seq_len`); `device_type` None: this
    machine's device; `weights_file` (bytes, bytes per weight) of the safetensors files (weights_file_info);
    `bytes_per_param` the bytes of a weight in fp32."""

    batch_size: int
    seq_len: int
    method: str = "lora"
    gradient_checkpointing: bool = False
    precision: str = "auto"
    packing: bool = True
    tokens_per_forward: int | None = None
    train_rows: int = 0
    longest: int | None = None
    attention: str = "auto"
    compile: bool | str = "auto"
    device_type: str | None = None
    weights_file: tuple[int, int] = (0, 0)
    bytes_per_param: int = 4


# Bytes per weight of the quantised linear layers (NF4 with double-quantised scales, int8 + scales).
WEIGHT_BYTES = {"qlora": 0.53, "lora_8bit": 1.03}


# The memory model below, calibrated by benchmarks/calibrate_memory.py (peak RSS of real train jobs on
# CPU, torch 2.13 / transformers 5.24 / peft 0.21; the script prints the measured points).
PROCESS_MB = 520.0  # python + torch + transformers + peft + tokenizer + token cache, before the weights (CPU RSS)
# Saved activations per token per decoder layer, in bytes: a * hidden + b * intermediate (+ c * kv width),
# per compute precision (bf16 autocast keeps most saved tensors in bf16).
ACTIVATION_BYTES = {"fp32": (40.0, 16.0, 8.0), "bf16": (24.0, 10.0, 4.0)}
# A CUDA GPU keeps fewer bytes per token in bf16: these replace the CPU's there (max allocated). Measured on an
# H200 (SDPA): the medical side-by-side job (SmolLM2-135M,
# r=8 qv, 4 x 512 tokens a pass) peaked at 1,832 MB against 2,347 estimated with the CPU's coefficients; its
# activations were 0.733 of theirs, hence 0.733 x the CPU's bf16 row. Checked on the default job (r=16, 8 x 130
# tokens): 1,167 MB measured, 1,141 estimated (-2 %; +20 % with the CPU's coefficients). fp32 on a GPU: not measured.
CUDA_ACTIVATION_BYTES = {"bf16": (17.6, 7.33, 2.93)}
# The coefficients above were fitted on jobs that adapt q and v, two hidden-wide inputs per layer. Each further
# adapted input feature keeps more per token (the adapter's dropout output and mask, its own saved input):
# bytes per token per input feature of the adapted linear layers beyond those two. Fitted in fp32 on SmolLM2-135M
# (512 tokens a pass, r=16, 3 steps) by benchmarks/calibrate_memory.py --jobs targets: attn, mlp and all-linear
# kept 227, 234 and 652 MB more than qv that the rest of the estimate did not hold; 11.5 puts all three within
# 40 MB. bf16 not measured: scaled as the hidden coefficient (x 0.6 on a CPU, x 0.733 more on a GPU).
ADAPTER_INPUT_BYTES = {"fp32": 11.5, "bf16": 6.9}
CUDA_ADAPTER_INPUT_BYTES = {"bf16": 5.06}
# bf16 matmuls on a CPU run through oneDNN, which keeps a compiled kernel per matmul shape (kernels.shape_granule):
# RSS grows over a training run until the shapes are all met. Measured by benchmarks/bench_granule.py on 2 AVX512-BF16
# cores at granule 16, from step 5 to the end: +157 MB on the default data (60 steps), +200 MB on the medical job (40).
KERNEL_CACHE_MB = 180.0
# Eager attention (kernels.attention_implementation) keeps each layer's attention probabilities for the backward
# pass: rows x heads x width^2 elements, in bytes per element: the bf16 probabilities and the fp32 softmax output
# uncompiled, the bf16 probabilities alone when inductor fuses the softmax (compiled layers).
EAGER_SCORE_BYTES = {False: 6.0, True: 2.0}
TRAIN_TERMS = (
    "process",
    "weights",
    "optimizer",
    "activations",
    "attention",
    "loss",
    "tokens",
    "kernels",
)  # summed: the training peak
ALLOCATOR_SLACK = 1.10  # allocator fragmentation on the per-step (dynamic) part


def estimate_memory_mb(model, trainable: int, total: int, job: TrainJob, terms: dict | None = None) -> float:
    """Peak training memory (MB) of the train stage: peak RSS on a CPU, max allocated on a GPU.

    Terms (pass a dict as `terms` to get them back, MB): `process` (interpreter and libraries, CPU
    only), `weights` (the frozen base in bf16 under bf16 training, device.train_weight_dtype;
    quantised for qlora / lora_8bit), `optimizer` (gradients, AdamW moments and the best-adapter copy of
    the trained parameters), `activations` (saved tensors of one forward pass: tokens per pass x layers
    x a per-token-layer size calibrated per precision, and on a CUDA GPU for bf16 by a measurement
    there; layer inputs plus one layer under gradient checkpointing), `attention` (eager attention's
    saved probabilities, train.attention: layers x heads x tokens per pass x row width,
    EAGER_SCORE_BYTES each; one layer's under checkpointing), `loss` (one chunk of full-vocabulary
    logits and the hidden-state gradient of the chunked loss, loss.head_nll), `tokens` (the token
    cache), `kernels` (oneDNN's kernel cache, bf16 on a CPU: KERNEL_CACHE_MB), and allocator slack on
    the per-step part. Tokens per pass follow the train stage (batching.forward_tokens): `seq_len` packed
    tokens on a CPU with packing, else `batch_size` x `seq_len` (the worst case of a padded batch).

    On a CPU the peak can also come while the base model loads. `weights_file` is (bytes, bytes per
    weight) of the safetensors files (weights_file_info). Loaded in the dtype they are stored in, the
    weights stay the file's pages (no copy); converted (fp32 files into a bf16 base), the pages read are
    resident next to the converted weights. So the estimate is the larger of that `load` peak (process
    + converted files + weights) and the training sum; `terms` then also holds `load_peak` and
    `peak_phase` ("load" or "train"). Measured on the 0.5B shape: fp32 files into bf16 peak at 3,208 MB
    while loading, 1,325 MB after; bf16 files into bf16 392 MB (pages not yet touched)."""
    import torch

    from loraflow.model.batching import forward_tokens
    from loraflow.model.device import pick_device, train_weight_dtype, training_precision
    from loraflow.model.kernels import attention_implementation, compile_training
    from loraflow.model.loss import loss_chunk

    batch_size, seq_len, method, bytes_per_param = job.batch_size, job.seq_len, job.method, job.bytes_per_param
    device = torch.device(job.device_type) if job.device_type else pick_device()
    precision = training_precision(job.precision, device)
    base_bytes = train_weight_dtype(precision, method).itemsize  # the frozen base as the train stage loads it
    cfg = model.config
    hidden = getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0)
    layers = getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0)
    inter = getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden
    heads = getattr(cfg, "num_attention_heads", 0) or 1
    kv_width = (getattr(cfg, "num_key_value_heads", None) or heads) * (
        getattr(cfg, "head_dim", None) or hidden // heads
    )
    vocab = getattr(cfg, "vocab_size", 0)
    per_pass = (
        job.tokens_per_forward
        if job.tokens_per_forward is not None
        else forward_tokens(0, job.packing, batch_size, seq_len, device)
    )
    tokens = per_pass or batch_size * seq_len

    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    weights: float = total * bytes_per_param
    checkpointed = job.gradient_checkpointing or method in WEIGHT_BYTES
    if method in WEIGHT_BYTES:  # the decoder's linear layers are stored quantised
        weights -= linear * (bytes_per_param - WEIGHT_BYTES[method])
    elif base_bytes < bytes_per_param:  # frozen base loaded in bf16, adapter fp32
        weights -= (total - trainable) * (bytes_per_param - base_bytes)
    state_bytes = 2 if method in WEIGHT_BYTES else 8  # AdamW moments: two 1-byte (paged AdamW 8-bit) or two fp32
    optimizer = trainable * (4 + state_bytes + 4)  # gradient + moments + the best-adapter copy
    compute = "bf16" if precision == "bf16" else "fp32"
    a, b, c = (CUDA_ACTIVATION_BYTES.get(compute) if device.type == "cuda" else None) or ACTIVATION_BYTES[compute]
    per_token_layer = a * hidden + b * inter + c * kv_width
    adapted = sum(m.in_features for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "in_features"))
    beyond_qv = max(0, adapted - layers * 2 * hidden)  # input features the coefficients do not hold
    per_input = (CUDA_ADAPTER_INPUT_BYTES.get(compute) if device.type == "cuda" else None) or ADAPTER_INPUT_BYTES[
        compute
    ]
    if checkpointed:  # each layer's input kept, one layer's activations alive while it is recomputed
        activations = tokens * (layers * hidden * 4 + per_token_layer + per_input * beyond_qv / max(layers, 1))
    else:
        activations = tokens * (layers * per_token_layer + per_input * beyond_qv)
    eager = attention_implementation(job.attention, device, precision, seq_len) == "eager"
    compiled = compile_training(job.compile, device, precision, method, checkpointed)
    # rows no wider than seq_len nor the longest train row: a pass of `tokens` holds at most tokens x width
    # scores per head
    width = min(seq_len, job.longest or seq_len, tokens)
    scores = heads * tokens * width * EAGER_SCORE_BYTES[compiled] if eager else 0
    attention_saved = scores * (1 if checkpointed else layers)
    chunk = loss_chunk(vocab)
    loss = min(chunk, tokens) * vocab * 4 * 2 + tokens * hidden * 4 * 2
    token_cache = job.train_rows * seq_len * 5  # int32 ids + uint8 mask (upper bound: rows x max length)
    process = PROCESS_MB * 2**20 if device.type == "cpu" else 0
    kernels = KERNEL_CACHE_MB * 2**20 if device.type == "cpu" and compute == "bf16" else 0
    parts = {
        "process": process,
        "weights": weights,
        "optimizer": optimizer,
        "activations": activations * ALLOCATOR_SLACK,
        "attention": attention_saved * ALLOCATOR_SLACK,
        "loss": loss * ALLOCATOR_SLACK,
        "tokens": token_cache,
        "kernels": kernels,
    }
    train_peak = sum(parts.values())  # the TRAIN_TERMS
    file_bytes, file_weight_bytes = job.weights_file
    converted = (
        file_bytes if method in WEIGHT_BYTES or file_weight_bytes != base_bytes else 0
    )  # quantising converts too
    load_peak = process + converted + weights if device.type == "cpu" else 0
    if terms is not None:
        terms.update({k: v / 2**20 for k, v in parts.items()})
        terms.update(load_peak=load_peak / 2**20, peak_phase="load" if load_peak > train_peak else "train")
    return max(train_peak, load_peak) / 2**20


SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def weights_file_info(model_dir) -> tuple[int, int]:
    """(bytes, bytes per weight of most of them) of a model directory's safetensors files, read from their
    headers; (0, 0) for a config or a hub id."""
    d = Path(str(model_dir))
    total = 0
    by_size: dict[int, int] = {}  # bytes per weight -> bytes of the weights of that size
    for f in sorted(d.glob("*.safetensors")) if d.is_dir() else []:
        total += f.stat().st_size
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, t in header.items():
            if name != "__metadata__":
                start, end = t["data_offsets"]
                size = SAFETENSORS_BYTES.get(t["dtype"], 0)
                by_size[size] = by_size.get(size, 0) + end - start
    return total, max(by_size, key=by_size.__getitem__) if by_size else 0


def plan_memory(model, trainable: int, total: int, job: TrainJob, max_memory_mb: int = 0) -> dict:
    """The memory estimate (estimate_memory_mb) of `job` on the device `model` is on; with `max_memory_mb` set
    and exceeded, gradient checkpointing is switched on (and the estimate redone). Also whether the
    decoder layers are compiled (kernels.compile_training: `auto` does not compile under checkpointing)."""
    from loraflow.model.kernels import compile_training

    device = next(model.parameters()).device
    checkpointing = job.gradient_checkpointing

    def estimate(gc: bool) -> float:
        return estimate_memory_mb(
            model, trainable, total, dataclasses.replace(job, gradient_checkpointing=gc, device_type=device.type)
        )

    est = estimate(checkpointing)
    if max_memory_mb and est > max_memory_mb and not checkpointing:
        log.info("estimated peak %.0f MB > train.max_memory_mb %d: gradient checkpointing on", est, max_memory_mb)
        checkpointing, est = True, estimate(True)
        if est > max_memory_mb:
            log.warning(
                "estimated peak %.0f MB still above train.max_memory_mb %d with gradient checkpointing",
                est,
                max_memory_mb,
            )
    return {
        "estimate_mb": est,
        "gradient_checkpointing": checkpointing,
        "compiled": compile_training(job.compile, device, job.precision, job.method, checkpointing),
    }
