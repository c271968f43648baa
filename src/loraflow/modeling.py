"""Shared model plumbing: device choice, seeding, loading, batching and the supervised-only loss.

The loss applies the LM head only at positions whose next token is an assistant token: on a 49k
vocabulary the head is a large share of the model, and the other positions contribute nothing.
"""

from __future__ import annotations

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

    from loraflow.chatml import ensure_chat_template

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side=padding_side)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ensure_chat_template(tok)
    return tok


def unwrap(model):
    """The transformers model inside a peft wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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


def collate(examples: list[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (i, m) in enumerate(examples):
        ids[row, : len(i)] = torch.from_numpy(i.astype(np.int64))
        mask[row, : len(m)] = torch.from_numpy(m.astype(bool))
        attn[row, : len(i)] = 1
    return {"input_ids": ids.to(device), "labels_mask": mask.to(device), "attention_mask": attn.to(device)}


def supervised_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of next-token NLL over assistant tokens, number of those tokens)."""
    lm = unwrap(model)
    body = getattr(lm, lm.base_model_prefix)
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels_mask"][:, 1:]
    logits = lm.get_output_embeddings()(hidden[:, :-1][target])
    labels = batch["input_ids"][:, 1:][target]
    return F.cross_entropy(logits.float(), labels, reduction="sum"), int(labels.numel())


@torch.no_grad()
def mean_loss(model, examples: list[Example], batch_size: int, pad_id: int, device: torch.device, max_batches: int = 0) -> float:
    """Token-weighted mean NLL over assistant tokens (deterministic order, sorted by length)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    total, count = 0.0, 0
    for n, start in enumerate(range(0, len(order), batch_size)):
        if max_batches and n >= max_batches:
            break
        batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id, device)
        loss, k = supervised_loss(model, batch)
        total, count = total + loss.item(), count + k
    model.train(was_training)
    return total / max(count, 1)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
