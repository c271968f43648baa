"""CPU kernel choices: prepacked oneDNN linears for inference, the bf16 shape granule, eager attention and
compiled decoder layers where they were measured to be faster."""

from __future__ import annotations

import functools

import torch

from loraflow.model.device import cpu_has_fast_bf16


class _PrepackedLinear(torch.nn.Module):
    """An nn.Linear for CPU inference whose weight is held in oneDNN's prepacked (blocked) layout, the
    rewrite torch.compile's freezing pass makes of CPU linears, here without compiling (which costs
    minutes and, measured on 2 cores, gains nothing else). At decoding batch sizes the packed kernel
    reads the weight about 1.5x faster than the plain matmul; the LM head (49k x 576 on SmolLM2) about
    3x. Same arithmetic in a different order: results agree to float rounding. No autograd."""

    def __init__(self, linear: torch.nn.Linear, batch_hint: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), self.packed, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)


def prepack_cpu_linears(model, batch_hint: int) -> int:
    """Swap the model's frozen nn.Linear layers for _PrepackedLinear (not the adapter's lora_A/lora_B,
    nor DoRA's base layers, whose weight it reads), for inference on a CPU in fp32, or in bf16 where
    the CPU has native bf16 units; returns how many were swapped (0 where torch lacks oneDNN's
    prepacked linear, or on another device or dtype).

    The original weights are released. They are views of the checkpoint's memory-mapped safetensors
    file, which stays mapped (and counted in RSS once read) while any tensor of it lives, so the
    tensors left (embedding, norms) are copied out of it. Measured on SmolLM2-135M: 1,010 MB RSS after
    packing, against 1,415 MB with the file kept mapped."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return 0
    dtypes = {torch.float32} | ({torch.bfloat16} if cpu_has_fast_bf16() else set())
    swapped = 0
    for name, parent in list(model.named_modules()):
        if "lora_" in name or any(getattr(parent, "use_dora", {}).values()):  # DoRA reads its base weight in forward
            continue
        for child_name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype in dtypes:
                setattr(parent, child_name, _PrepackedLinear(child, batch_hint))
                swapped += 1
    if swapped:
        for param in model.parameters():
            param.data = param.data.clone()
        for module in model.modules():
            for key, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[key] = buffer.clone()
    return swapped


# Matmul rows (tokens) are rounded up to a multiple of this where bf16 matmuls run on a CPU (shape_granule).
ONEDNN_GRANULE = 16


def shape_granule(device: torch.device, precision: str) -> int:
    """Row-count granule of the model's matmuls: ONEDNN_GRANULE for bf16 on a CPU, else 1.

    There bf16 matmuls run through oneDNN, which builds and caches a kernel for every distinct shape
    (up to 1,024 of them, most of a MB each). A step's shapes follow the packed rows' widths and the
    number of assistant tokens, so nearly every forward pass met new shapes: on the side-by-side's
    medical job (2 AVX512-BF16 cores) the train job's RSS grew by about 100 MB a step to 3.3 GB
    against a one-step peak of 1.4 GB, and kernel building cost time. Rounded to a granule, the shapes
    are few; the extra rows are padding that carries no target. Why 16 (benchmarks/bench_granule.py, 2
    AVX512-BF16 cores, one process per granule): on the default data's ~100-token chats (60 steps of 8)
    granule 16 gave 359 real tokens/s with 8 % padding against 324 and 27 % with 64, peak RSS 1.6 against
    1.5 GB (granule 1: 371 tokens/s, RSS 1.4 -> 2.6 GB and still growing); on the medical job's ~480-token
    rows (40 steps of 4) 319 against 318 tokens/s, peak 1.74 against 1.53 GB (memory.KERNEL_CACHE_MB)."""
    return ONEDNN_GRANULE if device.type == "cpu" and precision == "bf16" else 1


# train.attention: auto picks transformers' eager attention for bf16 on a CPU up to rows of this many tokens.
EAGER_ATTENTION_MAX_LENGTH = 512
# train.compile: auto compiles the decoder layers for these methods (measured); others stay uncompiled.
COMPILE_METHODS = ("lora", "rslora")


def attention_implementation(requested: str, device: torch.device, precision: str, max_length: int) -> str:
    """transformers' `attn_implementation` for training (train.attention): `sdpa` or `eager` as asked;
    `auto` = eager for bf16 on a CPU with bf16 units, rows of at most EAGER_ATTENTION_MAX_LENGTH tokens; else sdpa.

    Why: torch's CPU flash-attention kernel (what SDPA runs there) works in 64-token blocks, at a small
    fraction of the bf16 matmul rate; its backward was a third of a bf16 training step. Eager attention is
    two batched bf16 matmuls and an fp32 softmax, and a row of at most 512 tokens keeps its scores small.
    On 2 AVX512-BF16 cores (SmolLM2-135M, LoRA r=8 qv, the train stage's packed passes of 512 tokens):
    medical rows (~480 tokens) 394-400 against 305-335 real tokens/s, the default data 457 against 412;
    rows of ~1,000 tokens 307 against 311 with 2.2x the peak RSS (the scores grow with the width squared),
    hence the bound. In fp32 eager gained 1.07x for +1.5 GB, and GPUs have fused kernels: sdpa there."""
    if requested != "auto":
        return requested
    return "eager" if _native_cpu_bf16(device, precision) and max_length <= EAGER_ATTENTION_MAX_LENGTH else "sdpa"


def _native_cpu_bf16(device: torch.device, precision: str) -> bool:
    """bf16 on a CPU with bf16 units (AMX / AVX512-BF16), where the auto choices below were measured."""
    return device.type == "cpu" and precision == "bf16" and cpu_has_fast_bf16()


@functools.lru_cache(maxsize=None)
def cxx_compiler_found() -> bool:
    """Whether torch.compile's CPU backend (inductor) finds the C++ compiler it builds kernels with (looked
    up once per process: the preflight asks for every grid point)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:  # noqa: BLE001 (no compiler, or an inductor without this helper: do not compile)
        return False


def compile_training(requested, device: torch.device, precision: str, method: str, checkpointing: bool) -> bool:
    """Whether the train stage compiles its decoder layers (train.compile): true / false as asked;
    `auto` = for bf16 on a CPU with bf16 units, methods in COMPILE_METHODS, without gradient checkpointing,
    where a C++ compiler is found. Measured on 2 AVX512-BF16 cores with eager attention (attention_implementation):
    medical rows 438-463 against 394-400 real tokens/s, the default data 505-565 against 457-475, with a
    lower peak RSS (inductor fuses the softmax and its casts); the first step pays the compilation, about
    20-50 s in a fresh process and 5 s once inductor's on-disk cache holds the graphs (later train jobs).
    Not measured on GPUs, in fp32 (slower end to end there on 2 AVX2 cores), or with quantised bases."""
    if requested != "auto":
        return bool(requested)
    return (
        _native_cpu_bf16(device, precision) and method in COMPILE_METHODS and not checkpointing and cxx_compiler_found()
    )
