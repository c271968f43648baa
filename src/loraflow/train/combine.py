"""Combine stage: several trained adapters on one base, switching verified, and a weighted combination.

All parts are loaded onto ONE base model under their run names. Switching (`set_adapter`) must
give each adapter exactly the logits it gives when loaded alone, and the parts must differ from each
other (else switching proves nothing). peft's `add_weighted_adapter` then builds the combination
(`cat`: ΔW = Σ wᵢ·ΔWᵢ exactly, ranks add up; `linear`: weighted A and B, equal ranks; `svd`,
`ties`, `dare_*`, `magnitude_prune*`: see peft), which is saved as an ordinary standalone adapter
and reloaded to check it, so the evaluate, merge and rank-analysis stages treat it like any run.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path

import torch

from loraflow.config import COMBINATION_TYPES, NEEDS_DENSITY
from loraflow.io import read_jsonl, write_json
from loraflow.model.device import peak_memory_mb, pick_device, pick_dtype, precision_name, set_threads
from loraflow.model.loading import load_causal_lm, load_tokenizer
from loraflow.model.methods import save_adapter
from loraflow.train.settings import CombineSettings

log = logging.getLogger(__name__)
EQUAL_RANK_TYPES = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
COMBINED = "combined"


def check_parts(
    name: str, adapter_dirs: list[str], weights: list[float], combination_type: str, density: float | None
) -> None:
    """Problems peft would hit halfway, found first and named by config key."""
    key = f"combine.{name}"
    if len(adapter_dirs) < 2:
        raise ValueError(f"{key}.adapters: combine at least two adapters")
    if len(weights) != len(adapter_dirs):
        raise ValueError(f"{key}.weights: {len(weights)} weights for {len(adapter_dirs)} adapters")
    if combination_type not in COMBINATION_TYPES:
        raise ValueError(f"{key}.combination_type: {combination_type!r} is not one of {', '.join(COMBINATION_TYPES)}")
    if combination_type in NEEDS_DENSITY and not (density and 0 < density <= 1):
        raise ValueError(f"{key}.density: combination_type {combination_type} needs a density in (0, 1], got {density}")
    configs = [json.loads((Path(d) / "adapter_config.json").read_text(encoding="utf-8")) for d in adapter_dirs]
    if any(c.get("use_dora") for c in configs):
        raise ValueError(f"{key}.adapters: peft cannot combine DoRA adapters")
    ranks = {Path(d).parent.name: c["r"] for d, c in zip(adapter_dirs, configs)}
    if combination_type in EQUAL_RANK_TYPES and len(set(ranks.values())) > 1:
        raise ValueError(
            f"{key}.combination_type: {combination_type} needs adapters of equal r, got {ranks}; use cat or svd"
        )


@torch.no_grad()
def masked_logits(model, batch) -> torch.Tensor:
    return model(**batch).logits.float()[batch["attention_mask"].bool()]


def load_with_adapter(
    model_dir: str, adapter_dir: str, device, trust_remote_code: bool, adapter_name: str = "default", dtype=None
):
    from peft import PeftModel

    base = load_causal_lm(model_dir, device, dtype=dtype, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(base, adapter_dir, adapter_name=adapter_name).eval()


def combine_adapters(
    model_dir: str,
    adapter_dirs: list[str],
    test_path: str,
    out_adapter: str,
    out_stats: str,
    out_check: str,
    settings: CombineSettings,
) -> dict:
    """Combine stage entry point (run name = the directory of out_adapter's parent). Switching runs with
    the base in the deploy `precision` (auto | fp32 | bf16); the combination is made, saved and reloaded
    on an fp32 base: peft creates a combined adapter in its base's dtype, so on a bf16 base its weights
    would be rounded to bf16 (and computed in bf16 until saved, where loading upcasts them). Both checks
    repeat the same computation, so they agree to within `tolerance`."""
    adapter_names, weights, combination_type, density = (
        settings.adapter_names,
        settings.weights,
        settings.combination_type,
        settings.density,
    )
    tolerance, trust_remote_code, precision = settings.tolerance, settings.trust_remote_code, settings.precision
    set_threads(settings.threads)
    start = time.perf_counter()
    name = Path(out_adapter).parent.name
    check_parts(name, adapter_dirs, weights, combination_type, density)
    device = pick_device()
    dtype = pick_dtype(device, precision)
    tokenizer = load_tokenizer(model_dir)
    rows = read_jsonl(test_path)[: settings.n_prompts]
    batch = tokenizer([r["text"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False).to(device)

    alone = {
        n: masked_logits(load_with_adapter(model_dir, d, device, trust_remote_code, dtype=dtype), batch)
        for n, d in zip(adapter_names, adapter_dirs)
    }

    def all_parts(dtype):  # every part on one base, under its own name
        model = load_with_adapter(model_dir, adapter_dirs[0], device, trust_remote_code, adapter_names[0], dtype)
        for n, d in zip(adapter_names[1:], adapter_dirs[1:]):
            model.load_adapter(d, adapter_name=n)
        return model

    model = all_parts(dtype)
    switching = {}
    for n in adapter_names:
        model.set_adapter(n)
        switching[n] = (masked_logits(model, batch) - alone[n]).abs().max().item()
    between = {
        f"{a} vs {b}": (alone[a] - alone[b]).abs().max().item() for a, b in itertools.combinations(adapter_names, 2)
    }
    bad = [n for n, diff in switching.items() if diff > tolerance]
    if bad or min(between.values()) == 0:
        raise RuntimeError(
            f"combine.{name}: switching adapters on one base failed: {switching} (tolerance {tolerance}); between "
            f"parts {between}"
        )

    if dtype != torch.float32:
        model = all_parts(torch.float32)
    model.add_weighted_adapter(
        adapters=adapter_names,
        weights=weights,
        adapter_name=COMBINED,
        combination_type=combination_type,
        density=density,
    )
    model.set_adapter(COMBINED)
    model.eval()  # the new adapter's layers (dropout included) are created in training mode
    combined = masked_logits(model, batch)
    save_adapter(model, COMBINED, out_adapter)
    reloaded = masked_logits(
        load_with_adapter(model_dir, out_adapter, device, trust_remote_code, dtype=torch.float32), batch
    )
    reload_diff = (reloaded - combined).abs().max().item()
    if reload_diff > tolerance:
        raise RuntimeError(
            f"combine.{name}: the saved combination does not reload to the same model (max |Δlogit| {reload_diff:.3g})"
        )

    from safetensors.torch import load_file

    tensors = load_file(str(Path(out_adapter) / "adapter_model.safetensors"))
    trainable = sum(t.numel() for t in tensors.values())
    total = sum(p.numel() for n, p in model.get_base_model().named_parameters() if "lora_" not in n) + trainable
    adapter_config = json.loads((Path(out_adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    check = {
        "adapters": adapter_names,
        "weights": weights,
        "combination_type": combination_type,
        "density": density,
        "switching_max_abs_logit_diff": switching,
        "between_adapters_max_abs_logit_diff": between,
        "reload_max_abs_logit_diff": reload_diff,
        "tolerance": tolerance,
        "passed": True,
        "prompts": len(rows),
        "precision": precision_name(dtype),
        "combined_in": "fp32",
    }
    stats = {
        "method": "combine",
        "r": adapter_config["r"],
        "lora_alpha": adapter_config["lora_alpha"],
        "target_modules": sorted(adapter_config["target_modules"]),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100 * trainable / total,
        "adapter_mb": (Path(out_adapter) / "adapter_model.safetensors").stat().st_size / 2**20,
        "train_time_s": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(device),
        "final_train_loss": None,
        "best_eval_loss": None,
        "steps": 0,
        "optimizer": None,
        "combined_from": adapter_names,
        "weights": weights,
        "combination_type": combination_type,
    }
    write_json(out_check, check)
    write_json(out_stats, stats)
    log.info(
        "%s = %s of %s (weights %s): r=%d, switching max |Δ| %s, reload max |Δ| %.2g",
        name,
        combination_type,
        adapter_names,
        weights,
        stats["r"],
        {k: f"{v:.1g}" for k, v in switching.items()},
        reload_diff,
    )
    return stats
