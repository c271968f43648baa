"""Merge stage: fold the adapter into the base weights (`merge_and_unload`) and verify the result.

The check compares logits of base + adapter with logits of the merged model on a few test prompts;
a difference above the tolerance fails the job, so an unverified merged model is never kept.
"""

from __future__ import annotations

import logging

import torch

from loraflow.evaluate import load_for_eval
from loraflow.io import atomic_dir, read_jsonl, write_json
from loraflow.modeling import load_tokenizer, set_threads

log = logging.getLogger(__name__)


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    return model(**batch).logits.float()


def merge_adapter(
    model_dir: str, adapter_dir: str, test_path: str, out_dir: str, out_check: str,
    tolerance: float = 1e-3, n_prompts: int = 4, threads: int | None = None, trust_remote_code: bool = False,
) -> dict:
    set_threads(threads)
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    model = load_for_eval(model_dir, adapter_dir, trust_remote_code)
    device = next(model.parameters()).device
    prompts = [r["text"] for r in read_jsonl(test_path)[:n_prompts]]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    mask = batch["attention_mask"].bool()
    before = _logits(model, batch)[mask]
    merged = model.merge_and_unload()
    after = _logits(merged, batch)[mask]
    max_diff = (before - after).abs().max().item()
    check = {
        "max_abs_logit_diff": max_diff, "tolerance": tolerance, "passed": max_diff <= tolerance,
        "prompts": len(prompts), "positions": int(mask.sum()), "dtype": str(next(merged.parameters()).dtype),
    }
    if not check["passed"]:
        raise RuntimeError(f"merged model differs from base + adapter: max |Δlogit| = {max_diff:.3g} > merge.tolerance = {tolerance:g}")
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    write_json(out_check, check)
    log.info("merged; max |Δlogit| = %.3g (tolerance %g)", max_diff, tolerance)
    return check
