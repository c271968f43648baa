"""Shared model plumbing: device choice, seeding, loading, batching and the supervised-only loss.

The loss applies the LM head only at positions whose next token is an assistant token: on a 49k
vocabulary the head is a large share of the model, and the other positions contribute nothing.
"""

from __future__ import annotations

import functools
import os
import random
import resource

import numpy as np
import torch
import torch.nn.functional as F

Example = tuple[np.ndarray, np.ndarray]


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
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


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


def load_causal_lm(model_dir: str, device: torch.device, dtype: torch.dtype | None = None, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype or pick_dtype(device), attn_implementation="sdpa",
        trust_remote_code=trust_remote_code, use_safetensors=True,
    )
    return model.to(device)


def load_tokenizer(model_dir: str, padding_side: str = "right"):
    from transformers import AutoTokenizer

    from loraflow.data.chatml import ensure_chat_template

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side=padding_side)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ensure_chat_template(tok)
    return tok


def unwrap(model):
    """The transformers model inside a peft wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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


def length_grouped_batches(lengths: list[int], batch_size: int, rng: np.random.Generator, group: int = 64) -> list[list[int]]:
    """Shuffle, sort within windows of `group` batches by length, then shuffle the batches:
    little padding, still random."""
    order = rng.permutation(len(lengths))
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return [list(map(int, b)) for b in batches]


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
    rows (40 steps of 4) 319 against 318 tokens/s, peak 1.74 against 1.53 GB (preflight.KERNEL_CACHE_MB)."""
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
    return _native_cpu_bf16(device, precision) and method in COMPILE_METHODS and not checkpointing and cxx_compiler_found()


def round_up(n: int, granule: int) -> int:
    return -(-n // granule) * granule


def collate(examples: list[Example], pad_id: int, device: torch.device, granule: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch (rounded up to a multiple of `granule`).
    `example` numbers each token's conversation (-1 on padding)."""
    width = round_up(max(len(ids) for ids, _ in examples), granule)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    which = torch.full((len(examples), width), -1, dtype=torch.long)
    for row, (i, m) in enumerate(examples):
        ids[row, : len(i)] = torch.from_numpy(i.astype(np.int64))
        mask[row, : len(m)] = torch.from_numpy(m.astype(bool))
        attn[row, : len(i)] = 1
        which[row, : len(i)] = row
    return {"input_ids": ids.to(device), "labels_mask": mask.to(device), "attention_mask": attn.to(device), "example": which.to(device)}


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """First-fit decreasing: example indices per row, each row's lengths summing to at most
    `max_length` (an example longer than that gets a row of its own). Deterministic."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(max_length - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return rows


def pack(examples: list[Example], pad_id: int, device: torch.device, max_length: int,
         rows: list[list[int]] | None = None, granule: int = 1) -> dict[str, torch.Tensor]:
    """Several conversations per row (rows of at most `max_length` tokens, see pack_rows), no attention
    mask: position ids restart at 0 for every conversation, from which transformers' masking utilities
    (find_packed_sequence_indices) build a block-diagonal causal mask for SDPA / flex attention, or
    varlen boundaries for flash attention, so no token attends across conversations. The first
    token of each conversation is never a target (nothing before it belongs to it). Trailing padding
    is a pseudo-conversation of its own (positions from 0, no targets); rows are as wide as the
    fullest, rounded up to a multiple of `granule` (shape_granule)."""
    lengths = [len(ids) for ids, _ in examples]
    rows = rows if rows is not None else pack_rows(lengths, max_length)
    width = round_up(max(sum(lengths[i] for i in row) for row in rows), granule)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    which = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            ids[r, at : at + n] = torch.from_numpy(examples[i][0].astype(np.int64))
            mask[r, at + 1 : at + n] = torch.from_numpy(examples[i][1][1:].astype(bool))
            pos[r, at : at + n] = torch.arange(n)
            which[r, at : at + n] = i
            at += n
        pos[r, at:] = torch.arange(width - at)
    return {"input_ids": ids.to(device), "labels_mask": mask.to(device), "position_ids": pos.to(device), "example": which.to(device)}


def forward_batches(examples: list[Example], pad_id: int, device: torch.device, packing: bool = False,
                    max_length: int = 512, tokens_per_forward: int = 0, granule: int = 1) -> list[dict[str, torch.Tensor]]:
    """One micro-batch as the model inputs of one or more forward passes. Unpacked: right-padded rows
    (collate); packed: conversations packed into rows of at most `max_length` tokens (pack). With
    `tokens_per_forward` > 0 the rows are split into forward passes of at most that many tokens
    (padding included; at least one row each): the gradient is the same sum over the same tokens,
    with activation memory bounded by the budget instead of the micro-batch.

    Packed rows are no wider than the micro-batch's longest conversation (at most `max_length`): SDPA
    with a block-diagonal mask costs width² per row whatever the mask holds, so rows of 512 filled with
    six 90-token chats spent about a fifth of a CPU training step on attention that is masked away
    (rows as wide as the longest: 1.19x tokens/s on the default data on 2 AVX2 cores, padding 0.5 %;
    benchmarks/bench_pack_width.py). Widths are rounded up to a multiple of `granule` (shape_granule)."""
    lengths = [len(ids) for ids, _ in examples]
    width = min(max_length, max(lengths, default=max_length))
    if not tokens_per_forward:
        return [pack(examples, pad_id, device, width, granule=granule) if packing else collate(examples, pad_id, device, granule)]
    rows = pack_rows(lengths, width) if packing else [[i] for i in sorted(range(len(examples)), key=lambda k: (-lengths[k], k))]
    fill = lambda row: sum(lengths[i] for i in row)
    rows.sort(key=fill, reverse=True)  # stable: a group's width is its first row's fill
    groups: list[list[list[int]]] = []
    for row in rows:
        if groups and (len(groups[-1]) + 1) * round_up(fill(groups[-1][0]), granule) <= tokens_per_forward:
            groups[-1].append(row)
        else:
            groups.append([row])
    if packing:
        return [pack(examples, pad_id, device, width, rows=group, granule=granule) for group in groups]
    return [collate([examples[row[0]] for row in group], pad_id, device, granule) for group in groups]


def forward_tokens(tokens_per_forward: int, packing: bool, batch_size: int, max_length: int, device: torch.device) -> int:
    """Tokens per forward pass (0 = the whole micro-batch in one pass). `train.tokens_per_forward: 0`
    means auto: on a CPU max_length tokens per pass (one full packed row) - the matmuls are as fast at
    that size and activation memory is a fraction of the micro-batch's; on a GPU the whole
    micro-batch (large matmuls keep it busy)."""
    if tokens_per_forward > 0:
        return max(tokens_per_forward, max_length) if packing else tokens_per_forward
    return max_length if device.type == "cpu" and packing else 0


def pass_bound(per_forward: int, batch_size: int, max_length: int, longest: int | None = None) -> int:
    """The most tokens one forward pass can hold: `per_forward` (forward_tokens; 0 = the whole
    micro-batch), and never more than a micro-batch of the longest rows there are (`longest`, the
    token cache's longest example; None = rows of max_length)."""
    return min(per_forward or batch_size * max_length, batch_size * (longest or max_length))


# Bytes of fp32 logits computed at once by the chunked loss (positions x vocabulary).
LOSS_CHUNK_BYTES = 64 * 2**20


def _loss_chunk(n_vocab: int) -> int:
    return max(16, LOSS_CHUNK_BYTES // (4 * max(n_vocab, 1)))


class _ChunkedHeadNLL(torch.autograd.Function):
    """Per-position NLL of `labels` under logits = hidden @ weight.T, computed in chunks of positions
    so the full-vocabulary logits of all positions never exist at once. The head weight is frozen
    (LoRA methods), so the only gradient is d nll / d hidden, a (positions x hidden) tensor computed
    chunk by chunk in the forward pass (softmax - one-hot, times the weight) and scaled by the
    incoming gradient in the backward pass. Matmuls follow the autocast state, as nn.Linear would."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk):
        nll = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden)
        granule = _head_granule(hidden)
        for s in range(0, hidden.shape[0], chunk):
            n = min(chunk, hidden.shape[0] - s)
            h, y = _pad_rows(hidden[s : s + n], granule), _pad_rows(labels[s : s + n], granule)  # padded rows are dropped below
            logits = F.linear(h, weight).float()
            lse = torch.logsumexp(logits, dim=-1)
            nll[s : s + n] = (lse - logits.gather(1, y[:, None]).squeeze(1))[:n]
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            probs[torch.arange(len(y), device=y.device), y] -= 1.0
            grad[s : s + n] = torch.matmul(probs.to(_matmul_dtype(h)), weight.to(_matmul_dtype(h)))[:n].to(hidden.dtype)
        ctx.save_for_backward(grad)
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        (grad,) = ctx.saved_tensors
        return grad * grad_nll[:, None].to(grad.dtype), None, None, None


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul with input `x` runs in: the autocast dtype where autocast is on, else x's
    (a plain module's weight has its input's dtype)."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def _head_granule(hidden: torch.Tensor) -> int:
    """shape_granule of the head's matmuls: how many target positions a chunk is padded to."""
    return shape_granule(hidden.device, "bf16" if _matmul_dtype(hidden) == torch.bfloat16 else "fp32")


def _pad_rows(t: torch.Tensor, granule: int) -> torch.Tensor:
    """`t` with zero rows appended up to a multiple of `granule` rows."""
    extra = round_up(t.shape[0], granule) - t.shape[0]
    return torch.cat([t, t.new_zeros((extra, *t.shape[1:]))]) if extra else t


def head_nll(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL of `labels` at each row of `hidden` (positions x hidden), fp32, without materialising
    the logits of all positions at once (see _ChunkedHeadNLL). A trainable head (method full) or a
    head with a bias takes the plain path. Without gradient the chunks go through `head` itself, so
    an inference head (prepack_cpu_linears) works too."""
    chunk = _loss_chunk(head.out_features)
    if torch.is_grad_enabled() and hidden.requires_grad:
        if getattr(head, "bias", None) is not None or head.weight.requires_grad:
            return F.cross_entropy(head(hidden).float(), labels, reduction="none")
        return _ChunkedHeadNLL.apply(hidden, head.weight, labels, chunk)
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    granule = _head_granule(hidden)
    for s in range(0, hidden.shape[0], chunk):
        n = min(chunk, hidden.shape[0] - s)
        logits = head(_pad_rows(hidden[s : s + n], granule))[:n]
        out[s : s + n] = F.cross_entropy(logits.float(), labels[s : s + n], reduction="none")
    return out


def _token_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL of every assistant target token, the target's position in the flattened [:, 1:] grid)."""
    lm = unwrap(model)
    body = getattr(lm, lm.base_model_prefix)
    inputs = {"input_ids": batch["input_ids"], "use_cache": False}
    if "position_ids" in batch:  # packed rows: the positions carry the conversation boundaries
        inputs["position_ids"] = batch["position_ids"]
    else:
        inputs["attention_mask"] = batch["attention_mask"]
    hidden = body(**inputs).last_hidden_state
    target = batch["labels_mask"][:, 1:]
    labels = batch["input_ids"][:, 1:][target]
    return head_nll(lm.get_output_embeddings(), hidden[:, :-1][target], labels), target


def supervised_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of next-token NLL over assistant tokens, number of those tokens). Padded (collate) or
    packed (pack) batches; the LM head runs only at target positions, in chunks."""
    nll, _ = _token_nll(model, batch)
    return nll.sum(), int(nll.numel())


def per_example_loss(model, batch: dict[str, torch.Tensor], n_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, target count) per conversation of the batch, by its `example` index."""
    nll, target = _token_nll(model, batch)
    which = batch["example"][:, 1:][target]
    sums = torch.zeros(n_examples, dtype=torch.float64, device=nll.device).index_add_(0, which, nll.double())
    counts = torch.zeros(n_examples, dtype=torch.long, device=nll.device).index_add_(0, which, torch.ones_like(which))
    return sums, counts


@torch.no_grad()
def mean_loss(model, examples: list[Example], batch_size: int, pad_id: int, device: torch.device, max_batches: int = 0,
              precision: str = "fp32", forwards=None) -> float:
    """Token-weighted mean NLL over assistant tokens (deterministic order, sorted by length), under
    the autocast of `precision` (the training loop's, whose frozen weights may be stored in bf16).
    `forwards` turns a batch of examples into forward passes (default: one right-padded pass,
    collate); the train stage passes its own (packed passes of the training step's shapes, so on a
    CPU in bf16 validation adds no oneDNN kernels of other shapes: shape_granule)."""
    forwards = forwards or (lambda batch: [collate(batch, pad_id, device, shape_granule(device, precision))])
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    total, count = 0.0, 0
    for n, start in enumerate(range(0, len(order), batch_size)):
        if max_batches and n >= max_batches:
            break
        for batch in forwards([examples[i] for i in order[start : start + batch_size]]):
            with autocast(precision, device):
                loss, k = supervised_loss(model, batch)
            total, count = total + loss.item(), count + k
            del batch, loss
    model.train(was_training)
    return total / max(count, 1)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
