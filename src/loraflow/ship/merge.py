"""Merge stage: fold the adapter into the base weights (`merge_and_unload`) and verify the result.

The check compares logits of base + adapter with logits of the merged model on a few test prompts;
a difference above the tolerance fails the job, so an unverified merged model is never kept.
"""

from __future__ import annotations

import logging
import time

import torch

from loraflow.evaluate.run import load_for_eval
from loraflow.io import atomic_dir, read_jsonl, write_json
from loraflow.model.modeling import load_tokenizer, set_threads

log = logging.getLogger(__name__)


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    return model(**batch).logits.float()


@torch.no_grad()
def generation_speed(model, batch, pad_id: int, new_tokens: int) -> float:
    """Generated tokens/s with exactly `new_tokens` greedy tokens per prompt (best of two timings)."""
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id,
                  top_p=None, top_k=None, temperature=None)
    model.generate(**batch, **dict(kwargs, max_new_tokens=2, min_new_tokens=2))  # warm-up
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        model.generate(**batch, **kwargs)
        best = min(best, time.perf_counter() - start)
    return batch["input_ids"].shape[0] * new_tokens / best


def merge_adapter(
    model_dir: str, adapter_dir: str, test_path: str, out_dir: str, out_check: str,
    tolerance: float = 1e-3, n_prompts: int = 4, speed_tokens: int = 32, threads: int | None = None, trust_remote_code: bool = False,
    method: str = "lora",
) -> dict:
    """Merge stage entry point: merged model, logit check, and inference speed of base, base +
    adapter and merged model on the same prompts (merged should match base).

    Adapters trained on a quantised base (qlora, lora_8bit) are merged into the full-precision base,
    the usual way to ship them: a merged model cannot be re-quantised without loss."""
    set_threads(threads)
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    model = load_for_eval(model_dir, adapter_dir, trust_remote_code)
    device = next(model.parameters()).device
    rows = read_jsonl(test_path)[:n_prompts]
    batch = tokenizer([r["text"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    prompts = tokenizer([r["prompt"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    mask = batch["attention_mask"].bool()
    before = _logits(model, batch)[mask]
    speed = {"tok_s_adapter": generation_speed(model, prompts, tokenizer.pad_token_id, speed_tokens)}
    merged = model.merge_and_unload()
    after = _logits(merged, batch)[mask]
    speed["tok_s_merged"] = generation_speed(merged, prompts, tokenizer.pad_token_id, speed_tokens)
    base = load_for_eval(model_dir, None, trust_remote_code)
    speed["tok_s_base"] = generation_speed(base, prompts, tokenizer.pad_token_id, speed_tokens)
    del base
    max_diff = (before - after).abs().max().item()
    check = {
        "max_abs_logit_diff": max_diff, "tolerance": tolerance, "passed": max_diff <= tolerance,
        "prompts": len(rows), "positions": int(mask.sum()), "dtype": str(next(merged.parameters()).dtype), "method": method,
        **speed,
    }
    if not check["passed"]:
        raise RuntimeError(f"merged model differs from base + adapter: max |Δlogit| = {max_diff:.3g} > merge.tolerance = {tolerance:g}")
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_json(out_check, check)
    log.info("merged; max |Δlogit| = %.3g (tolerance %g); generation tok/s base %.1f, adapter %.1f, merged %.1f",
             max_diff, tolerance, speed["tok_s_base"], speed["tok_s_adapter"], speed["tok_s_merged"])
    return check
