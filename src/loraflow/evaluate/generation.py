"""Generation for evaluation: greedy answers, batched with left padding and a KV cache, stopping at
<|im_end|> or EOS; sampled answers for the consistency score; the CPU kernels greedy decoding uses."""

from __future__ import annotations

import logging
import time
from typing import cast

import torch

from loraflow.evaluate.metrics import pairwise_agreement

log = logging.getLogger(__name__)


def stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


def trim_partial_character(tokenizer, tokens: list[int]) -> str:
    """Decode `tokens`; when they end inside a multi-byte character (an answer cut at the token cap
    in the middle of a byte-level BPE character decodes to a trailing U+FFFD), drop the incomplete
    character's tokens (at most 3: a UTF-8 character has at most 4 bytes)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    for k in range(1, min(3, len(tokens)) + 1):
        if not text.endswith("\ufffd"):
            break
        text = tokenizer.decode(tokens[:-k], skip_special_tokens=True)
    return text


def greedy_decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    stops: list[int],
    pad_id: int,
    static_cache: bool = False,
    drop_finished: bool = True,
) -> torch.Tensor:
    """Greedy continuation of a left-padded batch: (batch, new tokens), pad after a stop token.

    A lean loop around the model's forward (the decoder with its LoRA layers called directly): one
    prefill pass computing the LM head at the last position only, then one token per step with the
    KV cache, stopping when every row has stopped. Same tokens as transformers' generate greedy;
    `static_cache` preallocates the cache (StaticCache) instead of growing it (DynamicCache).
    `drop_finished`: a row that has stopped leaves the batch and the cache, so the steps left cost
    only the rows still decoding (the same answers; no gain where every row runs to the cap)."""
    from transformers import DynamicCache, StaticCache

    from loraflow.model.loading import unwrap

    lm = unwrap(model)
    batch, prompt = input_ids.shape
    cache = (
        StaticCache(config=lm.config, max_cache_len=prompt + max_new_tokens)
        if static_cache
        else DynamicCache(config=lm.config)
    )
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    stop_ids = torch.tensor(stops, device=input_ids.device)
    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=input_ids.device)
    rows = torch.arange(batch, device=input_ids.device)  # the batch row of each row still decoding
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    ids, mask, pos = input_ids, attention_mask, positions
    for step in range(max_new_tokens):
        logits = lm(
            input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1
        ).logits
        nxt = logits[:, -1].argmax(-1).masked_fill(done, pad_id)
        out[rows, step] = nxt
        done |= torch.isin(nxt, stop_ids)
        if bool(done.all()):
            break
        ids, pos = nxt[:, None], pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        if drop_finished and bool(done.any()):  # rows that have stopped leave the batch (and the cache)
            keep = (~done).nonzero().squeeze(1)
            cache.reorder_cache(cast(torch.LongTensor, keep))  # nonzero() indices are int64
            rows, done, ids, pos, mask = rows[keep], done[keep], ids[keep], pos[keep], mask[keep]
    return out


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    sampling: dict | None = None,
    static_cache: bool = False,
) -> tuple[list[str], dict]:
    """Answers for `prompts` (same order) and speed figures; greedy unless `sampling` gives
    temperature/top_p. Prompts are batched by token count, left-padded, with the KV cache; greedy runs
    through greedy_decode, sampling through transformers' generate. An answer cut at the token cap
    loses a trailing incomplete character (trim_partial_character)."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer)
    new_tokens, start = 0, time.perf_counter()
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))  # by tokens: least left-padding per batch
    answers: list[str] = [""] * len(prompts)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
        if sampling:
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
                do_sample=True,
                top_k=None,
                **sampling,
            )[:, enc["input_ids"].shape[1] :]
        else:
            out = greedy_decode(
                model,
                enc["input_ids"],
                enc["attention_mask"],
                max_new_tokens,
                stops,
                tokenizer.pad_token_id,
                static_cache,
            )
        for row, i in enumerate(idx):
            gen = out[row].tolist()
            cut = next((k for k, t in enumerate(gen) if t in stops), len(gen))
            new_tokens += cut + (cut < len(gen))
            answers[i] = (
                trim_partial_character(tokenizer, gen[:cut])
                if cut == len(gen)
                else tokenizer.decode(gen[:cut], skip_special_tokens=True)
            ).strip()
    seconds = time.perf_counter() - start
    return answers, {
        "generated_tokens": new_tokens,
        "generation_s": seconds,
        "generation_tokens_per_s": new_tokens / max(seconds, 1e-9),
    }


def consistency(
    model, tokenizer, prompts: list[str], samples: int, temperature: float, seed: int, max_new_tokens: int
) -> float:
    """Ask each prompt `samples` times with sampling; mean pairwise ROUGE-L agreement (0-100)."""
    if not prompts or samples < 2:
        return float("nan")
    torch.manual_seed(seed)
    answers, _ = generate(
        model,
        tokenizer,
        [p for p in prompts for _ in range(samples)],
        len(prompts) * samples,
        max_new_tokens,
        sampling={"temperature": temperature, "top_p": 1.0},
    )
    groups = [answers[i * samples : (i + 1) * samples] for i in range(len(prompts))]
    return sum(pairwise_agreement(g) for g in groups) / len(groups)


def cpu_decoding(model, cpu_kernels: str, batch_size: int) -> bool:
    """evaluate.cpu_kernels. `auto` on a CPU: the frozen linears prepacked for oneDNN
    (model.kernels.prepack_cpu_linears) and a preallocated KV cache (StaticCache) for greedy decoding: faster
    on a CPU, with the same answers. `plain`, or any other device: transformers' layers and a growing cache.
    Returns whether greedy decoding uses the static cache."""
    from loraflow.model.kernels import prepack_cpu_linears

    if cpu_kernels != "auto" or next(model.parameters()).device.type != "cpu":
        return False
    log.info(
        "eval: %d linear layers prepacked for oneDNN; static KV cache (evaluate.cpu_kernels: auto)",
        prepack_cpu_linears(model, batch_size),
    )
    return True
