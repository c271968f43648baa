"""The supervised-only loss: next-token NLL at assistant positions.

The LM head applies only at positions whose next token is an assistant token: on a 49k vocabulary the
head is a large share of the model, and the other positions contribute nothing. It runs in chunks of
positions, so the full-vocabulary logits of all positions never exist at once.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from loraflow.model.batching import Example, collate, round_up
from loraflow.model.device import autocast, cpu_has_fast_bf16
from loraflow.model.kernels import shape_granule
from loraflow.model.loading import unwrap

# Bytes of fp32 logits computed at once by the chunked loss (positions x vocabulary).
LOSS_CHUNK_BYTES = 64 * 2**20


def loss_chunk(n_vocab: int) -> int:
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
            h, y = (
                _pad_rows(hidden[s : s + n], granule),
                _pad_rows(labels[s : s + n], granule),
            )  # padded rows are dropped below
            logits = F.linear(h, weight).float()
            lse = torch.logsumexp(logits, dim=-1)
            nll[s : s + n] = (lse - logits.gather(1, y[:, None]).squeeze(1))[:n]
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            probs[torch.arange(len(y), device=y.device), y] -= 1.0
            grad[s : s + n] = _times_head(probs, weight, _matmul_dtype(h))[:n].to(hidden.dtype)
        ctx.save_for_backward(grad)
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        (grad,) = ctx.saved_tensors
        return grad * grad_nll[:, None].to(grad.dtype), None, None, None


# Vocabulary rows per slice of _times_head's fp32 product (a slice of a 4096-wide head: 128 MB in fp32).
VOCAB_SLICE = 8192


def _times_head(probs: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """probs @ weight ((positions x vocabulary) @ (vocabulary x hidden)) with both inputs rounded to `dtype`.

    On a CPU without bf16 units torch's bf16 kernel for this layout (a long vocabulary dimension, the
    weight not transposed) is two orders of magnitude slower than fp32: about a minute against half a
    second for 64 positions of a 152k vocabulary. There the product runs in fp32 over vocabulary slices
    (bf16 values are exact in fp32; sums are fp32, as in a bf16 matmul) and is rounded to bf16 once."""
    if dtype != torch.bfloat16 or probs.device.type != "cpu" or cpu_has_fast_bf16():
        return torch.matmul(probs.to(dtype), weight.to(dtype))
    out = torch.zeros(probs.shape[0], weight.shape[1], dtype=torch.float32, device=probs.device)
    with torch.autocast("cpu", enabled=False):  # autocast would send the fp32 slices back to bf16
        for s in range(0, weight.shape[0], VOCAB_SLICE):
            out += probs[:, s : s + VOCAB_SLICE].to(dtype).float() @ weight[s : s + VOCAB_SLICE].to(dtype).float()
    return out.to(dtype)


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
    chunk = loss_chunk(cast(int, head.out_features))  # an int on a Linear and on an inference head
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
def mean_loss(
    model,
    examples: list[Example],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    max_batches: int = 0,
    precision: str = "fp32",
    forwards=None,
) -> float:
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
