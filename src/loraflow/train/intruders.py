"""Reduce-intruders stage: peft's `reduce_intruder_dimension` applied to a trained LoRA adapter,
saved as an ordinary adapter of its own run (`<run>_ri`), so the evaluate stage scores it and the
table shows what the reduction costs the task and what it gives back in retention.

peft finds the intruder dimensions of each tuned weight W + ΔW (loraflow.evaluate.intruders uses the
same criterion), shrinks them by `mitigation_lambda` and refits A and B at the adapter's rank. The
reduction runs on an fp32 base: peft writes the new factors in the base's dtype, and a bf16 base would
round them before they are saved.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
REDUCED = "intruder_reduced"
SUFFIX = "_ri"
PLAIN_LORA = ("lora", "rslora")


@dataclass(frozen=True)
class Reduction:
    """peft's reduce_intruder_dimension arguments: top_k and threshold (threshold_epsilon) find the
    intruders, mitigation_lambda is the share of each intruder kept (1 = unchanged, 0 = removed)."""

    top_k: int = 10
    threshold: float = 0.5
    mitigation_lambda: float = 0.75


def reduce_intruders(
    model_dir: str,
    adapter_dir: str,
    parent_stats: str,
    out_adapter: str,
    out_stats: str,
    reduction: dict,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> dict:
    """Write the reduced adapter to `out_adapter` and its train_stats (the parent's, with the reduction
    recorded and no training time of its own) to `out_stats`; returns the stats."""
    import torch  # here, not at the top: the workflow imports this module to plan the runs
    from peft import PeftModel
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    from loraflow.io import read_json, write_json
    from loraflow.model.device import peak_memory_mb, set_threads
    from loraflow.model.loading import load_causal_lm
    from loraflow.model.methods import save_adapter

    set_threads(threads)
    settings = Reduction(**reduction)
    start = time.perf_counter()
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        raise ValueError(
            f"{adapter_dir}: reduce_intruders needs a plain LoRA or rsLoRA adapter (peft applies it to LoRA only)"
        )
    base = load_causal_lm(model_dir, torch.device("cpu"), dtype=torch.float32, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    counts: dict[str, int] = {}

    def sink(message: str) -> None:  # peft reports one line per layer: "<name>: Intruders: N" or "<name>: No intruders"
        name, _, rest = message.partition(": ")
        if rest.startswith("Intruders:"):
            counts[name] = int(rest.split(":")[1])

    reduce_intruder_dimension(
        model,
        new_adapter_name=REDUCED,
        top_k=settings.top_k,
        threshold_epsilon=settings.threshold,
        mitigation_lambda=settings.mitigation_lambda,
        logging_sink=sink,
    )
    save_adapter(model, REDUCED, out_adapter)
    stats = {
        **read_json(parent_stats),
        "reduced_from": Path(adapter_dir).parent.name,
        "intruder_reduction": vars(settings),
        "intruders_reduced": sum(counts.values()),
        "modules_with_intruders": len(counts),
        "adapter_mb": (Path(out_adapter) / "adapter_model.safetensors").stat().st_size / 2**20,
        "reduce_time_s": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(torch.device("cpu")),
    }
    write_json(out_stats, stats)
    log.info(
        "%s: %d intruder dimensions in %d modules reduced to %g of their size",
        Path(out_adapter).parent.name,
        stats["intruders_reduced"],
        len(counts),
        settings.mitigation_lambda,
    )
    return stats


def expand_reductions(config: dict, runs: dict[str, dict]) -> dict[str, dict]:
    """`reduce_intruders.runs` (run names, or `all` for every LoRA / rsLoRA run) -> {`<run>_ri`: spec};
    each is evaluated like a run and gets a row. Its grid columns are its parent's, under its own point,
    with method `<parent method>+ri`, so it never counts as a seed of its parent's grid point."""
    from loraflow.config import ConfigError

    asked = (config.get("reduce_intruders") or {}).get("runs") or []
    names = [n for n, hp in runs.items() if hp["method"] in PLAIN_LORA] if asked == "all" else list(asked)
    if names and not (config.get("rank_analysis") or {}).get("intruder_top_k", 10):
        raise ConfigError(
            "config key rank_analysis.intruder_top_k: 0 finds no intruders, so reduce_intruders.runs has nothing to "
            "reduce"
        )
    for n in names:
        if n not in runs:
            raise ConfigError(
                f"config key reduce_intruders.runs: {n!r} is not a run of the grid (runs: {', '.join(runs)})"
            )
        if runs[n]["method"] not in PLAIN_LORA:
            raise ConfigError(
                f"config key reduce_intruders.runs: {n!r} is a {runs[n]['method']} run; peft reduces intruders "
                f"of {' and '.join(PLAIN_LORA)} adapters only"
            )
    return {
        f"{n}{SUFFIX}": {**runs[n], "point": f"{n}{SUFFIX}", "method": f"{runs[n]['method']}+ri", "reduced_from": n}
        for n in names
    }
