"""Where and in what precision a model runs: device, weight dtype, bf16 autocast, threads, seeds, peak memory."""

from __future__ import annotations

import os
import random
import resource

import numpy as np
import torch


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def pick_dtype(device: torch.device, precision: str | None = None) -> torch.dtype:
    """The dtype a model's weights are loaded in. With a configured `precision` (auto | fp32 | bf16)
    that precision as `training_precision` resolves it; without one (direct calls), bf16 on GPUs
    with bf16 and fp32 elsewhere."""
    if precision is not None:
        return PRECISIONS[training_precision(precision, device)]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """`fp32` / `bf16` (the config's names) for a weight dtype; other dtypes by their torch name."""
    return next((name for name, d in PRECISIONS.items() if d == dtype), str(dtype).removeprefix("torch."))


def model_precision(model) -> str:
    """The precision a (possibly peft-wrapped) model runs in: the dtype of its floating-point weights
    outside the adapter (peft keeps adapter weights in fp32 on a bf16 base)."""
    dtypes = [p.dtype for n, p in model.named_parameters() if p.is_floating_point() and "lora_" not in n]
    return precision_name(max(set(dtypes), key=dtypes.count)) if dtypes else "fp32"


def train_weight_dtype(precision: str, method: str = "lora") -> torch.dtype:
    """Weights of a training run in a resolved precision: bf16 mixed precision keeps the frozen base in
    bf16 (as it is deployed; peft keeps the trained adapter weights in fp32) but every weight in fp32
    when every weight is trained (method full), so AdamW updates fp32 master weights."""
    return torch.bfloat16 if precision == "bf16" and method != "full" else torch.float32


def cpu_has_fast_bf16() -> bool:
    """Native bf16 matrix units (AMX or AVX512-BF16): there, bf16 matmuls are several times faster than
    fp32; elsewhere (e.g. AVX2-only CPUs) they are emulated and slower."""
    cpu = torch.cpu
    return any(
        getattr(cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )


def training_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on GPUs with bf16 and on CPUs with native bf16, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """Mixed precision for the forward pass: weights and optimizer stay fp32, matmuls run in bf16
    (the loss is computed in fp32). A no-op context for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def set_threads(threads: int | None) -> int:
    """Use `threads` intra-op threads; 0/None = every CPU this process may run on. The same count
    whatever Snakemake's --cores, so results do not depend on it."""
    n = int(threads) if threads else len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
