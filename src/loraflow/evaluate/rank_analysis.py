"""Rank analysis stage: how much of its rank r does a trained LoRA adapter actually use?

For every adapted module the learned update is ΔW = s · B · A, with B (out × r), A (r × in) and
s = lora_alpha / r (or lora_alpha / sqrt(r) for rsLoRA; per-module r and alpha from `rank_pattern`
/ `alpha_pattern`). Its singular values are computed exactly and cheaply without forming ΔW:
with B = Q_B R_B and Aᵀ = Q_A R_A (reduced QR), ΔW = s · Q_B (R_B R_Aᵀ) Q_Aᵀ and Q_B, Q_A have
orthonormal columns, so σ(ΔW) = σ(s · R_B R_Aᵀ), an r × r problem (float64).

The effective rank at energy e is the smallest k with σ₁² + … + σ_k² ≥ e · Σσ² (0 when ΔW = 0).
If 99 % of the energy fits in rank 5 everywhere, r = 8 would have carried the same update.

Only `adapter_config.json` and `adapter_model.safetensors` are read (no base model). Keys other
than `*.lora_A.weight` / `*.lora_B.weight` (and the `lora_embedding_A/B` of embedding layers) are
ignored: DoRA magnitude vectors, LoRA biases, `modules_to_save` copies.

Outputs:
- CSV, one row per module, sorted by layer then name: layer (first integer in the name, empty if
  none), module (last name component, e.g. q_proj), name (full module name), r, scaling, sigma_max,
  fro_norm (= ‖ΔW‖_F), eff_rank_<pct> per energy (``eff_rank_90``, ``eff_rank_99``, ``eff_rank_99.5``
  …) and ``sigma_norm``: σ_i / σ_1 for i = 1 … min(r, out, in), semicolon-joined (all 0 when ΔW = 0).
- summary JSON (keys listed in `summarise`), with a one-line ``verdict``.
- PNG: effective rank per layer for each module type (r dashed) and the normalised spectra.

With the base model's directory, every linear module also gets its intruder dimensions (singular
vectors of the tuned weight W + ΔW unlike any of W's: loraflow.evaluate.intruders), the CSV columns
``intruders`` and ``intruder_min_cos``, and the summary the ``intruder*`` keys.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from statistics import median

import torch

from loraflow.evaluate.intruders import IntruderSettings, analyse_intruders, summarise_intruders
from loraflow.io import atomic_path, write_json

log = logging.getLogger(__name__)

_LORA_KEY = re.compile(
    r"^(?P<name>.+)\.(?P<part>lora_A|lora_B)\.weight$|^(?P<ename>.+)\.(?P<epart>lora_embedding_A|lora_embedding_B)$"
)
_PREFIX = "base_model.model."
SPECTRUM_FLOOR = 1e-6  # normalised singular values below this are drawn at this value on the log plot


def energy_label(energy: float) -> str:
    """0.9 -> '90', 0.99 -> '99', 0.995 -> '99.5' (used in column and key names)."""
    return f"{round(energy * 100, 6):g}"


def lora_singular_values(lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    """Singular values (descending, float64) of ΔW = scaling · B · A via QR of B and Aᵀ."""
    a = lora_A.detach().to(torch.float64).reshape(lora_A.shape[0], -1)  # (r, in); conv kernels flattened
    b = lora_B.detach().to(torch.float64).reshape(lora_B.shape[0], -1)  # (out, r)
    if b.shape[1] != a.shape[0]:
        raise ValueError(f"lora_B {tuple(lora_B.shape)} and lora_A {tuple(lora_A.shape)} do not chain")
    r_b = torch.linalg.qr(b, mode="r").R  # (min(out, r), r)
    r_a = torch.linalg.qr(a.T, mode="r").R  # (min(in, r), r)
    return torch.linalg.svdvals(scaling * (r_b @ r_a.T))


def effective_rank(sigma: torch.Tensor, energy: float) -> int:
    """Smallest k whose k largest σ² hold at least `energy` of Σσ²; 0 when every σ is 0."""
    sq = torch.sort(sigma.to(torch.float64) ** 2, descending=True).values
    total = float(sq.sum())
    if total <= 0.0:
        return 0
    cum = torch.cumsum(sq, 0) / total
    return int((cum < energy - 1e-12).sum()) + 1  # tolerance: an exact rank-k update reaches 1.0 at k


def _pattern_value(pattern: dict, name: str, default):
    """peft's rule (peft.utils.other.get_pattern_key): first key that matches the end of the name."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def load_updates(adapter_dir: str) -> tuple[dict, list[dict]]:
    """(adapter config, [{name, layer, module, r, scaling, sigma}]) for every LoRA pair in the adapter."""
    from safetensors import safe_open

    folder = Path(adapter_dir)
    cfg_path, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise FileNotFoundError(
            f"{adapter_dir} holds no peft adapter (adapter_config.json + adapter_model.safetensors); "
            "a `full` fine-tuning run has no LoRA update to analyse"
        )
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    pairs: dict[str, dict[str, str]] = {}
    with safe_open(str(weights), framework="pt") as fh:
        for key in fh.keys():
            m = _LORA_KEY.match(key)
            if not m:
                continue  # DoRA magnitude, lora bias, modules_to_save weights, ...
            name, part = (m["name"], m["part"]) if m["name"] else (m["ename"], m["epart"].replace("embedding_", ""))
            pairs.setdefault(name.removeprefix(_PREFIX), {})[part] = key
        modules = []
        for name, keys in pairs.items():
            if set(keys) != {"lora_A", "lora_B"}:
                log.warning("%s: only %s stored, skipped", name, sorted(keys))
                continue
            a, b = fh.get_tensor(keys["lora_A"]), fh.get_tensor(keys["lora_B"])  # embeddings: B A = ΔWᵀ, same σ
            r = a.shape[0]
            alpha = _pattern_value(cfg.get("alpha_pattern"), name, cfg.get("lora_alpha", r))
            scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
            layer = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
            modules.append(
                {
                    "name": name,
                    "layer": int(layer[1]) if layer else None,
                    "module": name.rsplit(".", 1)[-1],
                    "r": r,
                    "scaling": scaling,
                    "sigma": lora_singular_values(a, b, scaling),
                }
            )
    if not modules:
        raise ValueError(f"{weights} has no lora_A/lora_B weight pairs (peft_type {cfg.get('peft_type')!r})")
    modules.sort(key=lambda m: (m["layer"] if m["layer"] is not None else -1, m["module"], m["name"]))
    return cfg, modules


def summarise(cfg: dict, modules: list[dict], energies: list[float]) -> dict:
    """Summary keys: r, lora_alpha, use_rslora, use_dora, n_modules, n_zero_modules, r_max, energies,
    eff_rank_<pct>_median / eff_rank_<pct>_max per energy, suggested_r, smaller_r_would_suffice,
    verdict, note."""
    r_cfg, top = cfg.get("r"), max(energies)
    r_max = max(m["r"] for m in modules)  # = r unless rank_pattern gives some modules a larger rank
    out = {
        "r": r_cfg,
        "lora_alpha": cfg.get("lora_alpha"),
        "use_rslora": bool(cfg.get("use_rslora")),
        "use_dora": bool(cfg.get("use_dora")),
        "n_modules": len(modules),
        "n_zero_modules": sum(float(m["sigma"].max()) == 0.0 for m in modules),
        "r_max": r_max,
        "energies": list(energies),
    }
    for e in energies:
        ranks = [m[f"eff_rank_{energy_label(e)}"] for m in modules]
        out[f"eff_rank_{energy_label(e)}_median"] = median(ranks)
        out[f"eff_rank_{energy_label(e)}_max"] = max(ranks)
    need = out[f"eff_rank_{energy_label(top)}_max"]
    out["suggested_r"] = min(max(1, 1 << max(0, need - 1).bit_length()), r_max)  # smallest power of two >= need
    out["smaller_r_would_suffice"] = out["suggested_r"] < r_max
    pct = f"{energy_label(top)}%"
    if out["n_zero_modules"] == len(modules):
        out["verdict"] = f"r={r_max}: ΔW = 0 in every module (untrained adapter?), so no rank is used at all"
    elif out["smaller_r_would_suffice"]:
        out["verdict"] = (
            f"r={r_max}: {pct} of the update energy fits in rank ≤ {need} in every module; "
            f"r={out['suggested_r']} would have sufficed"
        )
    else:
        out["verdict"] = (
            f"r={r_max}: {pct} of the update energy needs rank {need} in some module "
            f"(median {out[f'eff_rank_{energy_label(top)}_median']:g}); a smaller r would have cut into the update"
        )
    out["note"] = (
        "DoRA adapter: the learned magnitude vector rescales the columns of W + ΔW and is not part of ΔW's "
        "spectrum analysed here"
        if out["use_dora"]
        else ""
    )
    return out


def write_csv(path: str, modules: list[dict], energies: list[float]) -> None:
    intruders = (
        ["intruders", "intruder_min_cos"] if any("intruders" in m for m in modules) else []
    )  # analysed with the base
    cols = [
        "layer",
        "module",
        "name",
        "r",
        "scaling",
        "sigma_max",
        "fro_norm",
        *(f"eff_rank_{energy_label(e)}" for e in energies),
        *intruders,
        "sigma_norm",
    ]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for m in modules:
            writer.writerow(
                {
                    **m,
                    "layer": "" if m["layer"] is None else m["layer"],
                    "scaling": f"{m['scaling']:.6g}",
                    "sigma_max": f"{m['sigma_max']:.6g}",
                    "fro_norm": f"{m['fro_norm']:.6g}",
                    "intruders": "" if m.get("intruders") is None else m["intruders"],
                    "intruder_min_cos": "" if m.get("intruder_min_cos") is None else f"{m['intruder_min_cos']:.4g}",
                    "sigma_norm": ";".join(f"{v:.6g}" for v in m["sigma_norm"]),
                }
            )


def plot(path: str, modules: list[dict], energies: list[float], summary: dict) -> None:
    """Left: effective rank per layer per module type (r dashed). Right: σ_i/σ_1 spectra, log y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    top, low = max(energies), min(energies)
    types = sorted({m["module"] for m in modules})
    colours = {t: plt.cm.tab10(i % 10) for i, t in enumerate(types)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for t in types:
        ms = [m for m in modules if m["module"] == t]
        xs = [m["layer"] if m["layer"] is not None else i for i, m in enumerate(ms)]
        left.plot(
            xs,
            [m[f"eff_rank_{energy_label(top)}"] for m in ms],
            "o-",
            color=colours[t],
            label=f"{t} ({energy_label(top)}%)",
        )
        if low != top:
            left.plot(
                xs,
                [m[f"eff_rank_{energy_label(low)}"] for m in ms],
                "s:",
                color=colours[t],
                alpha=0.6,
                ms=3,
                label=f"{t} ({energy_label(low)}%)",
            )
        for m in ms:
            if m["sigma_max"] > 0:
                right.semilogy(
                    range(1, len(m["sigma_norm"]) + 1),
                    [max(v, SPECTRUM_FLOOR) for v in m["sigma_norm"]],
                    "-",
                    color=colours[t],
                    alpha=0.5,
                    lw=1,
                )
    left.axhline(summary["r_max"], ls="--", color="k", lw=1, label=f"r = {summary['r_max']}")
    if summary["smaller_r_would_suffice"]:
        left.axhline(
            summary["suggested_r"], ls=":", color="grey", lw=1, label=f"suggested r = {summary['suggested_r']}"
        )
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("layer")
    left.set_ylabel("effective rank (energy share)")
    left.set_ylim(bottom=0, top=summary["r_max"] * 1.45 + 1)  # headroom for the legend
    left.set_title(f"Effective rank per layer; suggested r = {summary['suggested_r']}", fontsize=10)
    left.legend(fontsize=7, ncol=2)
    left.grid(alpha=0.3)
    for t in types:
        right.plot([], [], color=colours[t], label=t)
    if summary["n_zero_modules"] == len(modules):
        right.text(0.5, 0.5, "ΔW = 0 in every module", ha="center", va="center", transform=right.transAxes)
    else:
        right.set_yscale("log")
        right.set_ylim(bottom=SPECTRUM_FLOOR / 2, top=2)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("singular value index i")
    right.set_ylabel(rf"$\sigma_i / \sigma_1$ (below {SPECTRUM_FLOOR:g} drawn at {SPECTRUM_FLOOR:g})")
    right.set_title("Normalised singular values of ΔW, one line per module", fontsize=10)
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    flags = "".join([", rsLoRA" if summary["use_rslora"] else "", ", DoRA" if summary["use_dora"] else ""])
    fig.suptitle(
        f"LoRA rank analysis: r = {summary['r']}, lora_alpha = {summary['lora_alpha']}{flags}\n{summary['verdict']}",
        fontsize=11,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def analyse_adapter(
    adapter_dir: str,
    out_csv: str,
    out_summary: str,
    out_plot: str,
    energies: Sequence[float] = (0.9, 0.99),
    model_dir: str | None = None,
    intruder_top_k: int = 10,
    intruder_threshold: float = 0.5,
) -> dict:
    """Singular values and effective ranks of every ΔW of a peft LoRA adapter, and with the base model
    (`model_dir`) the intruder dimensions of every tuned weight; returns the summary."""
    energies = sorted({float(e) for e in energies})
    if not energies or not all(0 < e <= 1 for e in energies):
        raise ValueError(f"energies must be shares in (0, 1], got {energies}")
    cfg, modules = load_updates(adapter_dir)
    for m in modules:
        s = m["sigma"]
        m["sigma_max"], m["fro_norm"] = float(s[0]) if len(s) else 0.0, float(torch.linalg.vector_norm(s))
        m["sigma_norm"] = (s / s[0]).tolist() if m["sigma_max"] > 0 else [0.0] * len(s)
        for e in energies:
            m[f"eff_rank_{energy_label(e)}"] = effective_rank(s, e)
    summary = summarise(cfg, modules, energies)
    if model_dir is not None:
        intruders = IntruderSettings(top_k=intruder_top_k, threshold=intruder_threshold)
        analyse_intruders(model_dir, adapter_dir, modules, intruders)
        summary.update(summarise_intruders(modules, intruders))
        log.info("%s: %s", adapter_dir, summary["intruder_note"])
    write_csv(out_csv, modules, energies)
    write_json(out_summary, summary)
    plot(out_plot, modules, energies, summary)
    log.info("%s: %d modules; %s", adapter_dir, len(modules), summary["verdict"])
    return summary
