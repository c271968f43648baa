"""Intruder dimensions of learned LoRA updates: why a fine-tune forgot.

Shuttleworth et al. ("LoRA vs Full Fine-tuning: An Illusion of Equivalence", 2024/25) find that LoRA
adds new high-ranking singular vectors to a weight matrix, *intruder dimensions*, that are nearly
orthogonal to every singular vector of the pre-trained weight, and that they go with forgetting. A
tuned weight W' = W + ΔW has an intruder among its top-k left singular vectors u'_i when
max_j |u'_i · u_j| < threshold over all left singular vectors u_j of W.

The criterion (top-k, threshold) is peft's `reduce_intruder_dimension`'s, so a count here is what that
mitigation would act on. Only linear layers are analysed (embedding updates are stored transposed and
rarely carry intruders). Base weights are read one tensor at a time from the model's safetensors files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntruderSettings:
    """top_k: how many leading singular vectors of the tuned weight are examined (0 = no analysis);
    threshold: the largest |cosine| with a base singular vector that still counts as an intruder."""

    top_k: int = 10
    threshold: float = 0.5


def intruder_similarities(weight: torch.Tensor, delta: torch.Tensor, top_k: int) -> torch.Tensor:
    """For each of the top-k left singular vectors of weight + delta: its largest |cosine| with any
    left singular vector of `weight` (float32 SVDs, as peft computes them)."""
    w = weight.detach().to(torch.float32)
    u_base = torch.linalg.svd(w, full_matrices=False).U
    u_tuned = torch.linalg.svd(w + delta.detach().to(torch.float32), full_matrices=False).U[:, :top_k]
    return (u_tuned.T @ u_base).abs().max(dim=1).values


def count_intruders(weight: torch.Tensor, delta: torch.Tensor, settings: IntruderSettings) -> tuple[int, float]:
    """(number of intruder dimensions, smallest similarity among the top-k) of one tuned weight."""
    sims = intruder_similarities(weight, delta, settings.top_k)
    return int((sims < settings.threshold).sum()), float(sims.min())


def _weight_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, for single-file and sharded checkpoints."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: model_dir / f for name, f in weight_map.items()}
    from safetensors import safe_open

    single = model_dir / "model.safetensors"
    with safe_open(str(single), framework="pt") as fh:
        return {name: single for name in fh.keys()}


def _base_key(module_name: str, files: dict[str, Path]) -> str | None:
    """The base checkpoint's weight name of an adapted module (the adapter's names lose the leading
    `model.` of some families, e.g. when the checkpoint was saved from the inner model)."""
    for key in (f"{module_name}.weight", f"{module_name.removeprefix('model.')}.weight", f"model.{module_name}.weight"):
        if key in files:
            return key
    return None


def analyse_intruders(model_dir: str, adapter_dir: str, modules: list[dict], settings: IntruderSettings) -> None:
    """Add `intruders` and `intruder_min_cos` to every linear module of `modules` (rank analysis's
    module records: name, scaling); modules whose base weight is not found get None."""
    from safetensors import safe_open

    if settings.top_k <= 0:
        return
    files = _weight_files(Path(model_dir))
    adapter = Path(adapter_dir) / "adapter_model.safetensors"
    with safe_open(str(adapter), framework="pt") as ad:
        names = set(ad.keys())
        for m in modules:
            m["intruders"], m["intruder_min_cos"] = None, None
            a_key, b_key = (f"base_model.model.{m['name']}.lora_{p}.weight" for p in "AB")
            key = _base_key(m["name"], files)
            if a_key not in names or b_key not in names or key is None:
                continue
            with safe_open(str(files[key]), framework="pt") as base:
                weight = base.get_tensor(key)
            a, b = ad.get_tensor(a_key).to(torch.float32), ad.get_tensor(b_key).to(torch.float32)
            if weight.dim() != 2 or (b.shape[0], a.shape[1]) != tuple(weight.shape):
                continue  # fused or transposed layouts (GPT-2 Conv1D): no like-for-like comparison
            m["intruders"], m["intruder_min_cos"] = count_intruders(weight, m["scaling"] * (b @ a), settings)


def summarise_intruders(modules: list[dict], settings: IntruderSettings) -> dict:
    """Summary keys: intruder_top_k, intruder_threshold, intruders_total, intruder_modules (modules with
    at least one), intruder_modules_analysed, intruder_note (one line for the table and the log)."""
    analysed = [m for m in modules if m.get("intruders") is not None]
    out = {
        "intruder_top_k": settings.top_k,
        "intruder_threshold": settings.threshold,
        "intruders_total": sum(m["intruders"] for m in analysed),
        "intruder_modules": sum(m["intruders"] > 0 for m in analysed),
        "intruder_modules_analysed": len(analysed),
    }
    if not analysed:
        out["intruder_note"] = (
            "intruder dimensions not analysed" if settings.top_k <= 0 else "no base weight matched an adapted module"
        )
    else:
        out["intruder_note"] = (
            f"{out['intruders_total']} intruder dimensions in {out['intruder_modules']} of {len(analysed)} modules "
            f"(top {settings.top_k} singular vectors, |cos| < {settings.threshold:g} with every base singular vector)"
        )
    return out
