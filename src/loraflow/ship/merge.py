"""Merge stage: fold the adapter into the base weights (`merge_and_unload`) and verify the result.

The model is loaded in the deploy precision (`evaluate.precision`), and the merged model is saved in
it. Two logit checks on a few test prompts, either failing the job so an unverified merged model is
never kept:

1. The merge itself, in fp32: the loaded model (base + adapter) is upcast to fp32, which is exact,
   then merged in fp32; the logits before and after must agree within `merge.tolerance` (1e-3). In
   fp32 the only difference is summation order (~1e-5 on logits of magnitude ~20), so a wrong
   scale, a missing or extra module or a wrong merge formula shows up orders of magnitude above it.
   Comparing in bf16 instead mixes the merge with bf16 rounding: on the default model the bf16
   paths differ by ~1.7 (logits up to ~30) with a perfectly good merge.
2. The saved model, in the deploy precision: the merged model is cast to it, saved, read back and
   compared with base + adapter run in it. Both carry that precision's rounding, so the tolerance is
   measured, not guessed: `merge.deploy_tolerance_factor` (3) x the deploy precision's own error on
   these prompts (max |logit(base + adapter in bf16) - logit(base + adapter in fp32)|), plus
   `merge.tolerance`. It derives from the dtype's epsilon and the model's logit scale, and it stops a
   merged model that is worse in bf16 than bf16 itself is. In fp32 that error is 0 and this is the
   fp32 check again, on the file that was written.

The fp32 check needs the model once in fp32 (twice its bf16 size); where that does not fit in free
GPU memory it runs on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import torch

from loraflow.evaluate.loading import load_for_eval
from loraflow.io import atomic_dir, read_jsonl, write_json
from loraflow.model.device import precision_name, set_threads
from loraflow.model.loading import load_causal_lm, load_tokenizer
from loraflow.ship.settings import MergeSettings

log = logging.getLogger(__name__)


@torch.no_grad()
def _logits(model, batch, mask) -> torch.Tensor:
    """fp32 logits at the real (unpadded) positions, on the CPU."""
    device = next(model.parameters()).device
    return model(**{k: v.to(device) for k, v in batch.items()}).logits.float()[mask.to(device)].cpu()


@contextlib.contextmanager
def full_fp32_matmuls():
    """No TF32 (or other reduced-precision) fp32 matmuls during the fp32 check."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def fp32_check_device(model) -> torch.device:
    """The model's device if an fp32 copy of it fits there (free GPU memory), else the CPU."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return device
    extra = sum(p.numel() * (4 - p.element_size()) for p in model.parameters() if p.is_floating_point())
    free, _ = torch.cuda.mem_get_info(device)
    return device if free > 1.2 * extra + 2**30 else torch.device("cpu")


@torch.no_grad()
def generation_speed(model, batch, pad_id: int, new_tokens: int) -> float:
    """Generated tokens/s with exactly `new_tokens` greedy tokens per prompt (best of two timings)."""
    kwargs = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=pad_id,
        top_p=None,
        top_k=None,
        temperature=None,
    )
    model.generate(**batch, **dict(kwargs, max_new_tokens=2, min_new_tokens=2))  # warm-up
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        model.generate(**batch, **kwargs)
        best = min(best, time.perf_counter() - start)
    return batch["input_ids"].shape[0] * new_tokens / best


def cast_weights(model, dtype: torch.dtype, device: torch.device | None = None):
    """Move `model` to `device` and cast its floating-point parameters (not its buffers: rotary
    frequencies stay fp32, as in a freshly loaded model) to `dtype`, in place."""
    if device is not None:
        model.to(device)
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


def merge_adapter(
    model_dir: str,
    adapter_dir: str,
    test_path: str,
    out_dir: str,
    out_check: str,
    settings: MergeSettings = MergeSettings(),
) -> dict:
    """Merge stage entry point: the merged model, saved in the deploy precision; the two logit checks
    (module docstring), the second on the model read back from disk; inference speed of base, base +
    adapter and merged model on the same prompts in the deploy precision (merged should match base).

    Adapters trained on a quantised base (qlora, lora_8bit) are merged into the full-precision base,
    the usual way to ship them: a merged model cannot be re-quantised without loss."""
    tolerance, precision, trust_remote_code = settings.tolerance, settings.precision, settings.trust_remote_code
    set_threads(settings.threads)
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    model = load_for_eval(model_dir, adapter_dir, trust_remote_code, precision=precision)
    device = next(model.parameters()).device
    deploy_dtype = next(p.dtype for n, p in model.named_parameters() if "lora_" not in n and p.is_floating_point())
    rows = read_jsonl(test_path)[: settings.n_prompts]
    batch = tokenizer([r["text"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
    prompts = tokenizer([r["prompt"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False).to(
        device
    )
    mask = batch["attention_mask"].bool()
    before_deploy = _logits(model, batch, mask)
    speed = {"tok_s_adapter": generation_speed(model, prompts, tokenizer.pad_token_id, settings.speed_tokens)}

    with full_fp32_matmuls():  # check 1: the merge itself, in fp32 (upcasting the weights is exact)
        check_device = fp32_check_device(model)
        model = cast_weights(model, torch.float32, check_device)
        before = _logits(model, batch, mask)
        merged = model.merge_and_unload()
        after = _logits(merged, batch, mask)
    del model
    max_diff = (before - after).abs().max().item()
    noise = (before_deploy - before).abs().max().item()  # the deploy precision's own error (0 in fp32)
    check: dict[str, Any] = {
        "precision": precision_name(deploy_dtype),
        "max_abs_logit_diff": max_diff,
        "tolerance": tolerance,
        "check_precision": "fp32",
        "check_device": str(check_device),
        "max_abs_logit": before.abs().max().item(),
        "deploy_precision_error": noise,
        "deploy_tolerance": settings.deploy_tolerance_factor * noise + tolerance,
    }
    if max_diff > tolerance:
        raise RuntimeError(
            f"merged model differs from base + adapter: max |Δlogit| = {max_diff:.3g} in fp32 > merge.tolerance = "
            f"{tolerance:g}"
        )
    with atomic_dir(out_dir) as tmp:
        cast_weights(merged, deploy_dtype, device).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del merged
        saved = load_causal_lm(str(tmp), device, dtype=deploy_dtype, trust_remote_code=trust_remote_code).eval()
        check["deploy_max_abs_logit_diff"] = (before_deploy - _logits(saved, batch, mask)).abs().max().item()  # check 2
        if check["deploy_max_abs_logit_diff"] > check["deploy_tolerance"]:
            raise RuntimeError(
                f"the saved merged model ({check['precision']}) differs from base + adapter in {check['precision']}: "
                f"max |Δlogit| = {check['deploy_max_abs_logit_diff']:.3g} > {check['deploy_tolerance']:.3g} "
                f"({settings.deploy_tolerance_factor:g} x the {check['precision']} error of base + adapter, "
                f"{noise:.3g}, + merge.tolerance)"
            )
        check["passed"] = True
        speed["tok_s_merged"] = generation_speed(saved, prompts, tokenizer.pad_token_id, settings.speed_tokens)
        del saved
    base = load_for_eval(model_dir, None, trust_remote_code, precision=precision)
    speed["tok_s_base"] = generation_speed(base, prompts, tokenizer.pad_token_id, settings.speed_tokens)
    del base
    check.update(prompts=len(rows), positions=int(mask.sum()), dtype=str(deploy_dtype), method=settings.method, **speed)
    write_json(out_check, check)
    log.info(
        "merged, saved in %s; max |Δlogit| %.3g in fp32 (tolerance %g), %.3g in %s (tolerance %.3g); generation tok/s "
        "base %.1f, adapter %.1f, merged %.1f",
        check["precision"],
        max_diff,
        tolerance,
        check["deploy_max_abs_logit_diff"],
        check["precision"],
        check["deploy_tolerance"],
        speed["tok_s_base"],
        speed["tok_s_adapter"],
        speed["tok_s_merged"],
    )
    return check
